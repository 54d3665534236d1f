#!/usr/bin/env python3
"""Writes the seed inputs of fuzz/corpus/ (small valid inputs of each format). Re-running it
rewrites the seeds only; regression inputs (crash-*, regress-*) added by hand are kept."""
import json
import os
import struct

ROOT = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(ROOT, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, raw bytes); the reference layout, header padded to 8."""
    header, body = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(body), len(body) + len(raw)]}
        body += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + body


# safetensors
put("safetensors", "seed-two-tensors.safetensors", safetensors(
    [("model.inner.w", "F32", [2, 3], struct.pack("<6f", *range(6))),
     ("model.inner.b", "BF16", [3], b"\x80\x3f" * 3)], {"format": "pt", "step": "12"}))
put("safetensors", "seed-all-dtypes.safetensors", safetensors(
    [(f"t_{dt}", dt, [2], bytes(2 * size)) for dt, size in
     [("F64", 8), ("F32", 4), ("F16", 2), ("BF16", 2), ("I64", 8), ("I32", 4), ("I16", 2),
      ("I8", 1), ("U8", 1), ("BOOL", 1)]]))
put("safetensors", "seed-empty-and-scalar.safetensors", safetensors(
    [("empty", "F32", [0, 4], b""), ("scalar", "I64", [], struct.pack("<q", -7))]))
put("safetensors", "seed-no-tensors.safetensors", safetensors([]))

# dataset_json
put("dataset_json", "seed-sharegpt.json", json.dumps([
    {"conversations": [{"from": "system", "value": "Be brief."},
                       {"from": "human", "value": "Hello! <|user|> what is 2+2?"},
                       {"from": "gpt", "value": "4 \u2014 \u00e9t\u00e9 \U0001F600"}]},
    {"conversations": [{"from": "user", "value": "Bye"}, {"from": "assistant", "value": "Bye."}]},
], indent=1, ensure_ascii=False))
put("dataset_json", "seed-alpaca.json", json.dumps([
    {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
    {"instruction": "Say hi.", "input": "", "output": "hi"},
    {"instruction": "Count.", "input": None, "output": "1 2 3"},
]))
put("dataset_json", "seed-openassistant.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in [
    {"messages": [{"role": "prompter", "content": "Wie geht's?"}, {"role": "assistant", "content": "Gut."}]},
    {"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "\u65e5\u672c"},
                  {"role": "assistant", "content": "\u306f\u3044"}]},
]) + "\n\n")
put("dataset_json", "seed-bom-crlf.jsonl",
    b"\xef\xbb\xbf" + b'{"instruction": "a", "output": "b"}\r\n{"instruction": "c", "output": "d"}\r\n')

# config: the composed cfg_tiny (arch inline, as LoadComposedConfig returns it), then overrides.
main_root = os.path.dirname(ROOT)
with open(os.path.join(main_root, "configs", "cfg_tiny.yaml")) as f:
    cfg = f.read()
with open(os.path.join(main_root, "configs", "arch", "trm_tiny.yaml")) as f:
    arch = f.read()
cfg = cfg.replace("defaults:\n  - arch: trm_tiny\n  - _self_\n", "")
composed = cfg + "\narch:\n" + "".join("  " + l if l.strip() else l for l in arch.splitlines(True))
put("config", "seed-cfg-tiny.yaml", composed)
put("config", "seed-cfg-tiny-overrides.yaml", composed +
    "\n#overrides\nlr=3e-4\narch.hidden_size=64\n+arch.vocab_size=266\narch.seq_len=32\n"
    "data_paths=[data/a,data/b]\n~run_dir\nema=true\noptimizer=adam_atan2\n")
put("config", "seed-arch-only.yaml", "vocab_size: 50266\nseq_len: 128\nhidden_size: 256\nnum_heads: 4\n"
    "expansion: 4.0\nloss:\n  loss_type: stablemax_cross_entropy\nforward_dtype: bfloat16\n"
    "pos_encodings: learned\n#overrides\nH_cycles=3\nL_cycles=6\n")
put("config", "seed-flow-and-anchors.yaml",
    "base: &b {lr: 1.0e-4, epochs: 2}\ndata_paths: 'data/x'\nglobal_batch_size: 4.0\n"
    "arch: {vocab_size: 10, seq_len: 8, hidden_size: 8, num_heads: 2}\nother: *b\n"
    "#overrides\n~other\n~base\n")

# tokenizer
put("tokenizer", "seed-english.txt", "Hello world! It's a test: don't, we'll, I'm, they've 1234567 \n\n  spaces\ttabs")
put("tokenizer", "seed-mixed-scripts.txt",
    "Gr\u00fc\u00dfe, \u041f\u0440\u0438\u0432\u0435\u0442, \u4f60\u597d, \u0645\u0631\u062d\u0628\u0627, "
    "\U0001F44D\U0001F3FD \U0001F468\u200d\U0001F469\u200d\U0001F467 \u00a0\u3000\ufeff x\r\ny")
put("tokenizer", "seed-special.txt", "<|user|>hi<|enduser|><|sep|><|assistant|>yo<|endassistant|><|endoftext|><|user")
put("tokenizer", "seed-invalid-utf8.bin", b"ab\xff\xfe c\xc3 \xe2\x82 \xf0\x9f\x98 \xed\xa0\x80 \x00\x01 z")
put("tokenizer", "seed-code.txt", "def f(x):\n    return x**2  # square\n\nint main() { return 0; }\n")
