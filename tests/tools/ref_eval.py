#!/usr/bin/python3
"""A PyTorch evaluation of a checkpoint's model.safetensors with the reference TRM
(shared/reference/trm_ref.py), written from the seed's pretrain.py `evaluate`: every batch runs
every ACT call up to halt_max_steps from the initial carry (eval mode halts only there), the last
call's metric sums are added over the split and divided by `count`. token_loss is the mean over
every label token, perplexity its exp. Prints one JSON line like trm-eval's, and with --bench the
rows/s of the timed pass (after one untimed warm-up batch).

  ref_eval.py CHECKPOINT_DIR DATASET_DIR [--split test] [--batch-size N] [--threads T] [--bench]
"""
import argparse, json, math, os, sys, time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("TRM_REFERENCE_DIR", os.path.join(HERE, "..", "..", "..", "shared", "reference")))
import trm_ref  # noqa: E402

PREFIX = "model.inner."


def load_model(ckpt):
    ts, meta = trm_ref.load_safetensors(os.path.join(ckpt, "model.safetensors"))
    arch = json.loads(meta["arch"])
    loss_type = arch.get("loss", {}).get("loss_type", arch.get("loss_type", "softmax_cross_entropy"))
    m = trm_ref.TRM(arch, loss_type)
    m.load_reference({"param." + k: v for k, v in ts.items()})
    m.eval()
    return m, arch, loss_type


def token_losses(logits, labels, loss_type):
    mask = labels != trm_ref.IGNORE
    if loss_type == "stablemax_cross_entropy":
        x = logits.float()
        s = torch.where(x < 0, 1 / (1 - x + 1e-30), x + 1)
        logp = torch.log(s / s.sum(-1, keepdim=True))
        tok = -torch.where(mask, logp.gather(-1, torch.where(mask, labels, 0).unsqueeze(-1)).squeeze(-1), 0)
    else:
        tok = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                              ignore_index=trm_ref.IGNORE, reduction="none").view(labels.shape)
    return tok.sum().item(), mask.sum().item()


def evaluate(m, arch, loss_type, inputs, labels, batch):
    sums = {}
    with torch.no_grad():
        for start in range(0, inputs.shape[0], batch):
            b = {"inputs": inputs[start:start + batch], "labels": labels[start:start + batch]}
            carry = m.initial_carry(b)
            for _ in range(arch["halt_max_steps"]):
                carry, _, metrics, outs = m(carry, b)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            tl, n = token_losses(outs["logits"], carry["data"]["labels"].long(), loss_type)
            sums["token_loss_sum"] = sums.get("token_loss_sum", 0.0) + tl
            sums["tokens"] = sums.get("tokens", 0.0) + n
    return sums


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("data")
    ap.add_argument("--split", default="test")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bench", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m, arch, loss_type = load_model(a.checkpoint)
    d = os.path.join(a.data, a.split)
    inputs = torch.from_numpy(np.load(os.path.join(d, "all__inputs.npy")).astype(np.int32))
    labels = torch.from_numpy(np.load(os.path.join(d, "all__labels.npy")).astype(np.int32))
    if a.bench:
        evaluate(m, arch, loss_type, inputs[:a.batch_size], labels[:a.batch_size], a.batch_size)  # warm-up
    t0 = time.perf_counter()
    sums = evaluate(m, arch, loss_type, inputs, labels, a.batch_size)
    seconds = time.perf_counter() - t0
    count = sums["count"]
    out = {k: sums[k] / max(1.0, count) for k in ("lm_loss", "q_halt_loss", "accuracy", "exact_accuracy",
                                                  "q_halt_accuracy", "steps")}
    out["count"] = count
    out["token_loss"] = sums["token_loss_sum"] / max(1.0, sums["tokens"])
    out["perplexity"] = math.exp(out["token_loss"])
    line = {"checkpoint": a.checkpoint, "data": a.data, "split": a.split, "rows": int(inputs.shape[0]), "metrics": out}
    if a.bench:
        line["seconds"] = seconds
        line["rows_per_s"] = inputs.shape[0] / seconds
    print(json.dumps(line))


if __name__ == "__main__":
    main()
