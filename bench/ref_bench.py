#!/usr/bin/env python3
"""The PyTorch reference's training-step benchmark (`trm_ref.py bench`) on any device.

trm_ref.py's own `bench` runs on the CPU and reads the clock without waiting for the GPU. This is
the same loop (same presets, model, AdamW, random tokens, median of the timed steps) with the
reference model built on DEVICE (torch.set_default_device, so its own tensors land there too) and
the device synchronised around each step, so it compares with `trm-bench train --device DEVICE`.

  python3 bench/ref_bench.py PRESET [--steps N] [--device cpu|cuda] [--threads T] [--autocast-bf16]
                             [--reference DIR]

--autocast-bf16 runs the forward under torch.autocast(DEVICE, dtype=torch.bfloat16), the way a
PyTorch user trains in bfloat16 (float32 master weights and optimizer; the backward follows the
forward's dtypes): the anchor for `trm-bench train --forward-dtype bfloat16`. Set
OMP_WAIT_POLICY=PASSIVE in its environment for a like-for-like CPU figure (our binaries set it
for themselves; trm-bench train --vs-reference does it).
"""
import argparse
import json
import os
import sys
import time

import torch


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("preset")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--autocast-bf16", action="store_true")
    ap.add_argument("--reference", default=os.path.join(here, "..", "..", "shared", "reference"))
    a = ap.parse_args()
    sys.path.insert(0, a.reference)
    import trm_ref  # noqa: E402 (found through --reference)

    if a.preset not in trm_ref.PRESETS:
        sys.exit(f"ref_bench: preset '{a.preset}': expected one of {sorted(trm_ref.PRESETS)}")
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if dev.type != "cpu":
        torch.set_default_device(dev)  # PyTorch 2.x; the CPU needs nothing (and 1.13 lacks it)
    cfg = dict(trm_ref.PRESETS[a.preset], expansion=4, pos_encodings="rope", causal=True, rope_theta=10000.0,
               rms_norm_eps=1e-5, halt_exploration_prob=0.1)
    m = trm_ref.TRM(cfg)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    B, S, V = cfg["batch_size"], cfg["seq_len"], cfg["vocab_size"]
    m.train()
    carry, times, fwd, bwd, upd = None, [], [], [], []
    for i in range(a.steps + 2):
        x = torch.randint(0, V, (B, S + 1), dtype=torch.int32)
        b = {"inputs": x[:, :-1].contiguous(), "labels": x[:, 1:].contiguous()}
        carry = carry or m.initial_carry(b)
        sync()
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.autocast_bf16):
            carry, loss, _, _ = m(carry, b)
        sync()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad()
        sync()
        t3 = time.perf_counter()
        if i >= 2:
            times.append(t3 - t0)
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            upd.append(t3 - t2)
    med = sorted(times)[len(times) // 2]
    median = lambda v: round(sorted(v)[len(v) // 2], 5)  # noqa: E731
    print(json.dumps({"impl": "pytorch-eager-reference", "preset": a.preset,
                      "params": sum(p.numel() for p in m.parameters()), "step_s_median": round(med, 5),
                      "forward_s_median": median(fwd), "backward_s_median": median(bwd),
                      "optimizer_s_median": median(upd), "tokens_per_s": round(B * S / med, 1), "device": str(dev),
                      "threads": a.threads, "forward_dtype": "bfloat16" if a.autocast_bf16 else "float32",
                      "autocast": bool(a.autocast_bf16), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
