#!/usr/bin/env python3
"""Validation loss of a unigram model: the baseline a language model must beat.

    unigram_loss.py DATA_DIR [--seq T --rows R]

DATA_DIR is a `strata tokenize` output (meta.json + STRATOK1 shards, see
docs/formats.md). The unigram distribution is estimated on the train tokens with
add-one smoothing over the whole vocabulary, p(i) = (count(i) + 1) / (N + V), and
its cross-entropy is reported in nats per token on the val tokens.

By default every val token is scored. With --seq T --rows R only the tokens that
`strata train` scores in one validation are (rows = --eval-batches x --batch):
the targets of windows g = 0..R-1, i.e. val[(g*T + k) mod N] for k = 1..T, so the
figure is directly comparable with the run's val_loss. Prints one line:
`unigram_val_loss 6.1234 tokens 100173 train_tokens 1854070 vocab 2048`.
Standard library only.
"""
import argparse
import array
import json
import math
import os
import struct
import sys

HEADER = struct.Struct("<8sIIQQ")  # magic, version, dtype, count, reserved: 32 bytes


def read_shard(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < HEADER.size:
        sys.exit(f"{path}: too short for a STRATOK1 header")
    magic, version, dtype, count, _ = HEADER.unpack_from(data)
    if magic != b"STRATOK1" or version != 1:
        sys.exit(f"{path}: not a STRATOK1 version 1 shard")
    if dtype not in (2, 4) or count * dtype != len(data) - HEADER.size:
        sys.exit(f"{path}: bad dtype {dtype} or count {count} for {len(data)} bytes")
    ids = array.array({2: "H", 4: "I"}[dtype])
    if ids.itemsize != dtype:
        sys.exit(f"{path}: this Python has no {dtype}-byte array type")
    ids.frombytes(data[HEADER.size:])
    if sys.byteorder != "little":
        ids.byteswap()
    return ids


def read_split(data_dir, meta, split):
    ids = []
    for shard in meta["shards"]:
        if shard["split"] == split:
            part = read_shard(os.path.join(data_dir, shard["file"]))
            if len(part) != shard["tokens"]:
                sys.exit(f"{shard['file']}: {len(part)} tokens, meta.json says {shard['tokens']}")
            ids.extend(part)
    return ids


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data_dir")
    ap.add_argument("--seq", type=int, default=0, help="tokens per sequence of the run's validation")
    ap.add_argument("--rows", type=int, default=0, help="sequences per validation (eval-batches x batch)")
    a = ap.parse_args()

    with open(os.path.join(a.data_dir, "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)
    vocab = int(meta["vocab_size"])
    train = read_split(a.data_dir, meta, "train")
    val = read_split(a.data_dir, meta, "val")
    if not train or not val:
        sys.exit(f"{a.data_dir}: needs both train and val tokens")

    counts = [0] * vocab
    for t in train:
        if t >= vocab:
            sys.exit(f"{a.data_dir}: train id {t} >= vocab_size {vocab}")
        counts[t] += 1
    denom = len(train) + vocab
    nll = [math.log(denom) - math.log(c + 1) for c in counts]  # -log p(i)

    if a.seq > 0 and a.rows > 0:
        n = len(val)
        targets = (val[(g * a.seq + k) % n] for g in range(a.rows) for k in range(1, a.seq + 1))
        scored = a.rows * a.seq
    else:
        targets = val
        scored = len(val)
    total = 0.0
    for t in targets:
        if t >= vocab:
            sys.exit(f"{a.data_dir}: val id {t} >= vocab_size {vocab}")
        total += nll[t]
    print(f"unigram_val_loss {total / scored:.4f} tokens {scored} train_tokens {len(train)} vocab {vocab}")


if __name__ == "__main__":
    main()
