"""PGIM's precomputed ChatGPT knowledge (JinYuanLi0012/PGIM `data/data_PGIM/2015`).

Format (CRLF): blocks separated by a blank line; a block is the tweet as `token<TAB>label` lines,
a line `<EOS><TAB>X`, then the knowledge text one whitespace-separated word a line, each `<TAB>X`.
There are no IMGID lines, so blocks are matched to the dataset BY POSITION and every match is
verified by comparing tokens. The published files lack the last tweet of every split (3999 / 999 /
3256 blocks for 4000 / 1000 / 3257 tweets): trailing tweets without a block get no knowledge and are
counted. A token mismatch anywhere else is an error naming the block's first line: on the real data
every block matches, so there is nothing a resync strategy would have to guess about.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..io import read_text
from ..records import Sample

EOS = "<EOS>\tX"


@dataclass
class Block:
    line: int  # 1-based line of the block's first token
    tokens: list[str]
    text: str  # the knowledge words joined by single spaces


def read_pgim(path: str | Path) -> list[Block]:
    """All blocks of one file. Works on whole blocks with str methods (1.2M lines in ~0.3 s); only a
    block that fails the bulk check is walked line by line, to name the bad line."""
    path = Path(path)
    text = read_text(path).removeprefix("\ufeff").replace("\r\n", "\n")
    blocks, line = [], 1  # `line`: 1-based line where the current chunk starts
    for chunk in text.split("\n\n"):
        body = chunk.lstrip("\n")
        if body.strip("\n"):
            blocks.append(_block(path, line + len(chunk) - len(body), body.rstrip("\n")))
        line += chunk.count("\n") + 2
    return blocks


def _block(path: Path, first: int, body: str) -> Block:
    if body == EOS or body.startswith(EOS + "\n"):
        raise DataError(path, first, "knowledge block has no token lines before <EOS>")
    head, sep, tail = body.partition("\n" + EOS)
    if not sep or (tail and not tail.startswith("\n")):
        raise DataError(path, first, f"knowledge block has no {EOS!r} line before the next blank line")
    tokens = []
    for k, row in enumerate(head.split("\n"), start=first):
        token, tab, _ = row.partition("\t")
        if not tab or not token:
            raise DataError(path, k, f"expected token<TAB>label, got {row!r}")
        tokens.append(token)
    words = tail[1:] + "\n" if tail else ""
    # every line ends in TAB X exactly once, and no line is a bare TAB X (an empty word)
    if words.count("\tX\n") != words.count("\n") or "\n\tX\n" in "\n" + words:
        for k, w in enumerate(words.split("\n")[:-1], start=first + len(tokens) + 1):
            if not w.endswith("\tX") or len(w) < 3:
                raise DataError(path, k, f"expected a knowledge word<TAB>X, got {w!r}")
    return Block(line=first, tokens=tokens, text=words.replace("\tX\n", " ")[:-1])


def align(path: str | Path, blocks: list[Block], samples: list[Sample], data_path: str | Path = "") -> tuple[dict, dict]:
    """Match blocks to one split's samples (the full split, in file order) by position.

    Returns ({sample id: knowledge text}, stats). Samples after the last block are counted as
    missing; a block whose tokens differ from its sample's raises DataError at the block's line.
    """
    if len(blocks) > len(samples):
        raise DataError(path, blocks[len(samples)].line,
                        f"{len(blocks)} knowledge blocks for only {len(samples)} sentences in {data_path or 'the split'}")
    out = {}
    for k, (block, sample) in enumerate(zip(blocks, samples)):
        if block.tokens != sample.tokens:
            diff = next((j for j, (a, b) in enumerate(zip(block.tokens, sample.tokens)) if a != b),
                        min(len(block.tokens), len(sample.tokens)))
            raise DataError(path, block.line + min(diff, len(block.tokens) - 1),
                            f"knowledge block {k + 1} does not match sentence {sample.id} of "
                            f"{data_path or 'the split'} (first difference at token {diff}: "
                            f"{block.tokens[diff:diff + 1]} vs {sample.tokens[diff:diff + 1]})")
        out[sample.id] = block.text
    missing = [s.id for s in samples[len(blocks):]]
    return out, {"blocks": len(blocks), "aligned": len(out), "missing": len(missing), "missing_ids": missing[:20],
                 "empty": sum(1 for b in blocks if not b.text)}
