#!/usr/bin/env python3
"""Plot a job's training loss and evaluation loss against the step, as a PNG.

    TRM_COORDINATOR=127.0.0.1:50051 examples/python/plot_metrics.py JOB -o loss.png

Training points are `lm_loss` of each logged step; evaluation points are `eval_lm_loss` of each
evaluation (drawn only when the job evaluated). Needs matplotlib (Debian: python3-matplotlib).
"""
import argparse
import os
import sys

try:
    import trm_client
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
    import trm_client

from trm_client import Client, TrmError


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("job")
    p.add_argument("-o", "--output", default="loss.png", help="the PNG to write (default loss.png)")
    p.add_argument("--train-key", default="lm_loss")
    p.add_argument("--eval-key", default="eval_lm_loss")
    args = p.parse_args(argv)

    import matplotlib
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    try:
        client = Client()
        job = client.job(args.job)
        points = client.metrics(args.job, as_frame=False)
    except TrmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    train = [(r["step"], r[args.train_key]) for r in points if not r["eval"] and args.train_key in r]
    evals = [(r["step"], r[args.eval_key]) for r in points if r["eval"] and args.eval_key in r]
    if not train and not evals:
        print(f"error: job {args.job} has no '{args.train_key}' or '{args.eval_key}' points yet", file=sys.stderr)
        return 1

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    if train:
        ax.plot(*zip(*train), label=args.train_key, linewidth=1.2)
    if evals:
        ax.plot(*zip(*evals), "o-", label=args.eval_key, linewidth=1.5, markersize=4)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"{job.name} ({job.id}, {job.state})")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.output, format="png")
    print(f"{args.output}: {len(train)} training and {len(evals)} evaluation points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
