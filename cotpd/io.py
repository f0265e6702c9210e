"""Atomic file writing and JSONL helpers: nothing half-written is ever left behind."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson
import yaml

from .errors import DataError


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Write to a temporary file beside `path`, then rename over it.

    If the block raises, the temporary file is removed and `path` is untouched, so a crash or a
    validation error never leaves a truncated output for a later stage (or DVC) to trust.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        kwargs = {} if "b" in mode else {"encoding": encoding, "newline": "\n"}
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp makes the file 0600; give it the permissions a plain open() would (umask)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Write rows as JSON lines atomically; returns the number of rows written."""
    n = 0
    with atomic_write(path) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    return n


def iter_jsonl(path: str | Path) -> Iterator[Any]:
    """The rows of a JSON-lines file, parsed with orjson (2.3x json: a replay reads 24k samples);
    what orjson refuses and json reads (NaN, 1E400, escaped lone surrogates, integers past 64 bits)
    is read by json. A bad line raises DataError naming the file and line."""
    path = Path(path)
    for lineno, line in enumerate(read_text_lines(path), start=1):
        if not line.strip():
            continue
        try:
            yield orjson.loads(line)
        except orjson.JSONDecodeError:
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(path, lineno, f"not valid JSON: {exc.msg}") from None


def read_jsonl(path: str | Path) -> list[dict]:
    """Read JSON lines (`iter_jsonl`) into a list."""
    return list(iter_jsonl(path))


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_write(path) as fh:
        json.dump(obj, fh, ensure_ascii=False, indent=2, sort_keys=True)
        fh.write("\n")


def write_yaml(path: str | Path, obj: Any, header: str = "") -> None:
    """A YAML file (a scratch or work root's params.yaml) in the mapping's own key order, atomically."""
    with atomic_write(path) as fh:
        fh.write(header)
        yaml.safe_dump(obj, fh, sort_keys=False)


def shown(path: str | Path, root: str | Path) -> str:
    """`path` as a record or report names it: relative to `root` (the project) when inside it, so that a
    committed results.json names no checkout's or worktree's folder and resolves in any clone; else absolute."""
    path, root = Path(path), Path(root)
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(path, exc.lineno, f"not valid JSON: {exc.msg}") from None


def read_text(path: str | Path) -> str:
    """Read a UTF-8 file; a file that is not UTF-8 raises DataError with the line of the first bad byte."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "file not found")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(path, line, f"not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


def read_text_lines(path: str | Path) -> list[str]:
    """Lines of a UTF-8 file without their line endings (CRLF and LF both accepted)."""
    text = read_text(path)
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text:
        return []
    lines = (text[:-1] if text.endswith("\n") else text).split("\n")
    # strip only the CR of CRLF files: tokens may be other whitespace (the real data has a lone U+00A0)
    return [line[:-1] if line.endswith("\r") else line for line in lines]
