#!/usr/bin/env python3
"""Train a model on the TRM service from Python: push a dataset, submit a job, follow it, pull
the final checkpoint.

    TRM_COORDINATOR=127.0.0.1:50051 examples/python/submit_and_watch.py \\
        --dataset build/data/example-chat --config-name cfg_tiny --out runs/tiny max_steps=200

Trailing key=value arguments are config overrides. Progress goes to stdout, one line per
`log_interval` steps plus every state change, checkpoint and evaluation. The LAST line is one
JSON object: {"job": ID, "state": "SUCCEEDED", "checkpoint": DIR} ("checkpoint" is null unless
the job succeeded). Exit status 0 only when the job succeeded; 1 when it did not; 2 on bad
arguments or a refused request.
"""
import argparse
import json
import os
import sys

try:
    import trm_client
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
    import trm_client

from trm_client import CheckpointEvent, Client, MetricsEvent, StateEvent, TrmError


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="a built dataset directory (trm-data build)")
    p.add_argument("--config-name", required=True, help="a config the coordinator has, e.g. cfg_tiny")
    p.add_argument("--out", required=True, help="where the final checkpoint goes (a new or empty directory)")
    p.add_argument("--name", help="the job's name (default: the config's)")
    p.add_argument("--world-size", type=int, default=1)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    for ov in args.overrides:
        if "=" not in ov:
            p.error(f"'{ov}': expected key=value")
    return args


def fmt(values, keys):
    return "  ".join(f"{k} {values[k]:.4g}" for k in keys if k in values)


def main(argv=None):
    args = parse_args(argv)
    try:
        client = Client()
        ds = client.push_dataset(args.dataset)
        print(f"dataset {ds.name} {ds.content_sha256[:12]} ({ds.files} files)", flush=True)
        job = client.submit(args.config_name, dataset=ds.content_sha256, overrides=args.overrides,
                            world_size=args.world_size, name=args.name)
    except TrmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"job {job.id} submitted ({job.state})", flush=True)
    log_interval = int(job.config.get("log_interval") or 1)
    state = job.state
    try:
        for ev in client.watch(job.id):
            if isinstance(ev, StateEvent):
                state = ev.state
                print(f"{ev.state}" + (f": {ev.message}" if ev.message else ""), flush=True)
            elif isinstance(ev, MetricsEvent) and ev.eval:
                print(f"eval at step {ev.step}: {fmt(ev.values, sorted(ev.values))}", flush=True)
            elif isinstance(ev, MetricsEvent) and (ev.step % log_interval == 0 or ev.step == ev.total_steps):
                print(f"step {ev.step}/{ev.total_steps}  {fmt(ev.values, ['lm_loss', 'accuracy', 'tokens_per_s'])}",
                      flush=True)
            elif isinstance(ev, CheckpointEvent):
                print(f"checkpoint {ev.checkpoint.name} ({ev.checkpoint.size_bytes} bytes)", flush=True)
        checkpoint = None
        if state.value == "SUCCEEDED":
            pulled = client.pull(job.id, select="latest", out=args.out)
            checkpoint = os.path.abspath(pulled.path)
            print(f"pulled {pulled.name} to {checkpoint} ({pulled.bytes} bytes, SHA-256 verified)", flush=True)
    except TrmError as e:
        print(f"error: {e}", file=sys.stderr)
        print(json.dumps({"job": job.id, "state": str(state), "checkpoint": None}))
        return 1
    print(json.dumps({"job": job.id, "state": str(state), "checkpoint": checkpoint}))
    return 0 if checkpoint else 1


if __name__ == "__main__":
    sys.exit(main())
