#!/usr/bin/python3
"""Writes parity fixtures in the layout of shared/fixtures/trm/README.md for random model
configurations, computed by the PyTorch reference (shared/reference/trm_ref.py), so trm-parity
is checked on sizes, heads, cycles, position encodings, losses and ACT depths beyond the three
shipped fixtures.

  make_trm_fixtures.py OUT_DIR [--count N] [--seed S]

The reference module has no Q-continue bootstrap (no_ACT_continue: false); this script adds it
as the original TRM does (a second inner call on the new carry, without gradient, whose
sigmoid(halt if last step else max(halt, continue)) is the BCE target of q_continue).
"""
import argparse, json, math, os, random, struct, sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("TRM_REFERENCE_DIR", os.path.join(HERE, "..", "..", "..", "shared", "reference")))
import trm_ref  # noqa: E402


class TRMWithContinue(trm_ref.TRM):
    def forward(self, carry, batch):
        if self.cfg["no_ACT_continue"] or not self.training or self.cfg["halt_max_steps"] <= 1:
            return super().forward(carry, batch)
        h = carry["halted"]
        zH = torch.where(h[:, None, None], self.H_init, carry["zH"])
        zL = torch.where(h[:, None, None], self.L_init, carry["zL"])
        steps = torch.where(h, 0, carry["steps"])
        data = {k: torch.where(h.view(-1, *([1] * (batch[k].ndim - 1))), batch[k], v) for k, v in carry["data"].items()}
        zH, zL, logits, q_halt, q_cont = self.inner(zH, zL, data["inputs"])
        with torch.no_grad():
            steps = steps + 1
            last = steps >= self.cfg["halt_max_steps"]
            halted = last | (q_halt > q_cont)
            _, _, _, nh, nc = self.inner(zH, zL, data["inputs"])
            target = torch.sigmoid(torch.where(last, nh, torch.maximum(nh, nc)))
        labels = data["labels"].long()
        mask = labels != trm_ref.IGNORE
        counts = mask.sum(-1)
        div = counts.clamp_min(1).unsqueeze(-1)
        if self.loss_type == "stablemax_cross_entropy":
            x = logits.float()
            s = torch.where(x < 0, 1 / (1 - x + 1e-30), x + 1)
            logp = torch.log(s / s.sum(-1, keepdim=True))
            tok = -torch.where(mask, logp.gather(-1, torch.where(mask, labels, 0).unsqueeze(-1)).squeeze(-1), 0)
        else:
            tok = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                  ignore_index=trm_ref.IGNORE, reduction="none").view(labels.shape)
        lm_loss = (tok / div).sum()
        with torch.no_grad():
            correct = mask & (logits.argmax(-1) == labels)
            seq_correct = correct.sum(-1) == counts
            valid = halted & (counts > 0)
            metrics = dict(count=valid.sum(), accuracy=torch.where(valid, (correct.float() / div).sum(-1), 0).sum(),
                           exact_accuracy=(valid & seq_correct).sum(),
                           q_halt_accuracy=(valid & ((q_halt >= 0) == seq_correct)).sum(),
                           steps=torch.where(valid, steps, 0).sum())
        q_loss = F.binary_cross_entropy_with_logits(q_halt, seq_correct.to(q_halt.dtype), reduction="sum")
        qc_loss = F.binary_cross_entropy_with_logits(q_cont, target, reduction="sum")
        metrics.update(lm_loss=lm_loss.detach(), q_halt_loss=q_loss.detach(), q_continue_loss=qc_loss.detach())
        new = dict(zH=zH, zL=zL, steps=steps, halted=halted, data=data)
        return new, lm_loss + 0.5 * (q_loss + qc_loss), metrics, dict(logits=logits, q_halt_logits=q_halt,
                                                                       q_continue_logits=q_cont)


def save_safetensors(path, tensors, metadata):
    names = {torch.float32: "F32", torch.float64: "F64", torch.int32: "I32", torch.int64: "I64", torch.bool: "BOOL"}
    header, blobs, off = {"__metadata__": metadata}, [], 0
    for k in sorted(tensors):
        t = tensors[k].detach().contiguous()
        raw = (t.to(torch.uint8) if t.dtype == torch.bool else t).numpy().tobytes()
        header[k] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-(8 + len(h)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def random_config(rng):
    head_dim = rng.choice([4, 8, 12, 16])
    heads = rng.choice([1, 2, 3, 4])
    return dict(H_layers=0, rms_norm_eps=1e-5, rope_theta=rng.choice([10000.0, 500.0]), halt_exploration_prob=0.0,
                puzzle_emb_ndim=0, puzzle_emb_len=0, mlp_t=False, no_ACT_continue=rng.random() < 0.7,
                seq_len=rng.randint(3, 20), vocab_size=rng.randint(8, 70), H_cycles=rng.randint(1, 3),
                L_cycles=rng.randint(1, 3), L_layers=rng.randint(1, 3), hidden_size=head_dim * heads,
                expansion=rng.choice([1, 2, 2.5, 4, 8 / 3]), num_heads=heads,
                pos_encodings=rng.choice(["rope", "learned", "none"]), halt_max_steps=rng.randint(1, 8),
                causal=rng.random() < 0.7, batch_size=rng.randint(2, 5), num_puzzle_identifiers=1,
                forward_dtype="float32")


def make_batch(cfg, gen):
    B, S, V = cfg["batch_size"], cfg["seq_len"], cfg["vocab_size"]
    inputs = torch.randint(0, V, (B, S), generator=gen, dtype=torch.int32)
    labels = torch.randint(0, V, (B, S), generator=gen, dtype=torch.int32)
    labels[torch.rand(B, S, generator=gen) < 0.3] = -100
    labels[-1] = -100  # a row with nothing to predict (count 0)
    return {"inputs": inputs, "labels": labels, "puzzle_identifiers": torch.zeros(B, dtype=torch.int32)}


def make_fixture(path, cfg, loss_type, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    m = TRMWithContinue(cfg, loss_type)
    with torch.no_grad():  # random q_head so halting varies across rows
        m.w("q_head.weight").normal_(0, 0.5 / math.sqrt(cfg["hidden_size"]))
        m.w("q_head.bias").uniform_(-0.5, 0.5)
    out = {"param." + k: v for k, v in m.named_reference_tensors().items()}
    batches = {n: make_batch(cfg, gen) for n in ("batch_a", "batch_b")}
    for n, b in batches.items():
        for k, v in b.items():
            out[f"{n}.{k}"] = v
    m.eval()
    with torch.no_grad():
        carry = m.initial_carry(batches["batch_a"])
        for k in range(1, cfg["halt_max_steps"] + 1):
            carry, loss, metrics, o = m(carry, batches["batch_a"])
            p = f"eval.step{k}."
            out.update({p + "logits": o["logits"], p + "q_halt_logits": o["q_halt_logits"],
                        p + "q_continue_logits": o["q_continue_logits"], p + "z_H": carry["zH"],
                        p + "loss": loss, p + "halted": carry["halted"]})
            out.update({p + "metric." + mk: mv.double() for mk, mv in metrics.items()})
    m.train()
    carry = m.initial_carry(batches["batch_a"])
    named = m.named_reference_tensors()
    for i, bn in ((1, "batch_a"), (2, "batch_b"), (3, "batch_a")):
        m.zero_grad(set_to_none=True)
        carry, loss, metrics, o = m(carry, batches[bn])
        loss.backward()
        p = f"train.step{i}."
        out.update({p + "loss": loss, p + "logits": o["logits"], p + "q_halt_logits": o["q_halt_logits"],
                    p + "halted": carry["halted"], p + "steps": carry["steps"],
                    p + "current_inputs": carry["data"]["inputs"]})
        out.update({p + "metric." + mk: mv.double() for mk, mv in metrics.items()})
        for pk, prm in named.items():
            if prm.requires_grad:
                out[p + "grad." + pk] = prm.grad if prm.grad is not None else torch.zeros_like(prm)
    save_safetensors(path, out, {"arch": json.dumps(cfg), "loss_type": loss_type})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--count", type=int, default=12)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    torch.set_num_threads(1)
    rng = random.Random(a.seed)
    for i in range(a.count):
        cfg = random_config(rng)
        loss_type = rng.choice(["softmax_cross_entropy", "stablemax_cross_entropy"])
        path = os.path.join(a.out_dir, f"random_{a.seed}_{i:02d}.safetensors")
        make_fixture(path, cfg, loss_type, seed=a.seed * 1000 + i)
        print(path, json.dumps({k: cfg[k] for k in ("hidden_size", "num_heads", "H_cycles", "L_cycles", "L_layers",
                                                     "halt_max_steps", "pos_encodings", "causal", "no_ACT_continue")}),
              loss_type)


if __name__ == "__main__":
    main()
