#!/usr/bin/env python3
"""The synthetic task of scripts/hypernet_demo.sh: the query names three
children; the answer first tells a fixed story, then repeats the names in
order. With the recurrent chunk context the model sees only the last token
before each chunk of 16 answer tokens, so by the chunk that repeats the names
only a soft prompt can still hold them.

    hypernet_task.py DIR SEED [TRAIN_COUNT]

writes DIR/train.jsonl (TRAIN_COUNT records, default 4000) and DIR/test.jsonl
(one record per held-out ordered triple: a fifth of the 720, never trained on).
"""
import itertools
import json
import random
import sys

NAMES = ["Lily", "Tom", "Ben", "Sue", "Max", "Anna", "Tim", "Mia", "Sam", "Bob"]
STORY = "Once upon a time there was a little dog. The dog liked to play in the park with a red ball."


def record(triple):
    names = f"{triple[0]}, {triple[1]} and {triple[2]}"
    return {"prompt": f"Remember the names: {names}.", "completion": f"{STORY} The names were {names}."}


def write(path, records):
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def main():
    out, seed = sys.argv[1], int(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 4000
    rng = random.Random(seed)
    triples = list(itertools.permutations(NAMES, 3))
    rng.shuffle(triples)
    held_out = len(triples) // 5
    test, train = triples[:held_out], triples[held_out:]
    write(f"{out}/train.jsonl", [record(rng.choice(train)) for _ in range(count)])
    write(f"{out}/test.jsonl", [record(t) for t in test])


if __name__ == "__main__":
    main()
