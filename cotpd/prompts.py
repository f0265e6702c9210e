"""Prompt templates, versioned by the hash of their file.

Each prompt lives in ``cotpd/prompts/<name>.txt``::

    # comment lines (only before the first section)
    [system]
    ...
    [user]
    ... {text} ...

A prompt's version is ``<name>:<first 8 hex of the SHA-256 of the file>``; it goes into every
``ChatRequest`` built from the prompt, so editing a prompt file changes the request keys (the
ledger then treats the edited prompt as a new question) and the Dagster asset code version.

Placeholders are ``{name}`` with a lowercase identifier. The template is split at them once (a
regex), never read by ``str.format`` as written: braces inside a tweet cannot break rendering and a
value is never re-scanned for placeholders (``messages`` renders by a %-format of the pieces, their
own ``%`` doubled, which substitutes each value once, as ``render``'s join does). Values are data,
so closing/opening tags of our delimiters (``</tweet>``, ``<head>`` ...) inside a value are defused:
a tweet cannot end its own data block and smuggle instructions into the prompt (prompt injection).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property
from operator import itemgetter
from pathlib import Path

from .errors import ConfigError

PROMPTS_DIR = Path(__file__).parent / "prompts"

# grain -> prompt name, per task; RE prompts speak about the entity pair (head / tail)
COT_PROMPTS = {
    "ner": {"noun": "cot_noun", "sentence": "cot_sentence", "multimodal": "cot_multimodal"},
    "re": {"noun": "cot_noun_re", "sentence": "cot_sentence_re", "multimodal": "cot_multimodal_re"},
}
AUGMENT_PROMPTS = ("aug_style", "aug_entity_propose", "aug_entity_check", "aug_image")
CAPTION_PROMPTS = ("caption_image",)

_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_SECTION = re.compile(r"^\[(system|user)\]\s*$")
# tags our templates use as data delimiters; any such tag inside a value is defused
_TAG = re.compile(r"<\s*(/?)\s*(tweet|head|tail|image_caption|keep|entity|type)\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class Prompt:
    name: str
    template: str  # the whole file text (what the version hashes)
    version: str  # "<name>:<sha256[:8]>"
    system: str = ""
    user: str = ""

    @property
    def placeholders(self) -> set[str]:
        return set(self._parts["system"][1]) | set(self._parts["user"][1])

    @cached_property
    def _parts(self) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        """Each part split once into its literal pieces and the placeholder names between them: a
        render is then a join (replay renders every request of a 70k-request job to find its key)."""
        out = {}
        for part, text in (("system", self.system), ("user", self.user)):
            pieces = _PLACEHOLDER.split(text)  # literal, name, literal, ..., name, literal
            out[part] = (tuple(pieces[0::2]), tuple(pieces[1::2]))
        return out

    def render(self, part: str, **values) -> str:
        literals, names = self._parts["system" if part == "system" else "user"]
        missing = sorted(set(names) - values.keys())
        if missing:
            raise ConfigError(f"prompt {self.name!r} needs {missing}; got {sorted(values)}")
        out = [literals[0]]
        for name, literal in zip(names, literals[1:]):
            out += (_defuse(values[name]), literal)
        return "".join(out)

    def messages(self, **values) -> tuple:
        """The chat messages for these values (extra values are ignored, missing ones raise)."""
        return self.messages_of(values)

    @cached_property
    def _formats(self) -> tuple[frozenset[str], tuple[tuple[str, str, itemgetter | None, bool], ...]]:
        """For `messages_of`: the names both parts need, and per message (role, text, getter, one):
        a part without placeholders is its text (getter None); one with them a %-format (the literal
        pieces with their own `%` doubled, `%s` between them) of its names' values, which `getter`
        takes from the values in order (`one`: a single name, which itemgetter returns bare). A
        replay renders 71k prompts: `render` per part (its checks, a join, a call of _defuse per
        value) took 11.7-12.8 us a prompt, `messages_of` 3.4 us (cot_multimodal_re). test_prompts: same text."""
        names, parts = set(), []
        for role, text in (("system", self.system), ("user", self.user)):
            if role == "system" and not text:
                continue
            literals, part_names = self._parts[role]
            names.update(part_names)
            if part_names:
                fmt = "%s".join(lit.replace("%", "%%") for lit in literals)
                parts.append((role, fmt, itemgetter(*part_names), len(part_names) == 1))
            else:
                parts.append((role, text, None, False))
        return frozenset(names), tuple(parts)

    def messages_of(self, values: dict) -> tuple:
        """`messages(**values)` for a dict of values (no keyword copy)."""
        names, parts = self._formats
        if not names <= values.keys():
            for role, *_ in parts:
                self.render(role, **values)  # raises naming the missing values, part by part
        out = []
        for role, content, getter, one in parts:  # loops, not comprehensions: faster here (3.11)
            if getter is not None:
                args = (getter(values),) if one else getter(values)
                for v in args:  # the usual values (str without "<") need no _defuse
                    if type(v) is not str or "<" in v:
                        args = tuple(map(_defuse, args))
                        break
                content = content % args
            out.append({"role": role, "content": content})
        return tuple(out)


def _defuse(value) -> str:
    """A value as inert data: str() it, and turn delimiter tags into look-alikes (`<tweet>` -> `‹tweet›`)."""
    text = value if type(value) is str else "" if value is None else str(value)
    if "<" not in text:  # every tag starts with one: most values need no regex at all
        return text
    return _TAG.sub(lambda m: f"‹{m.group(1)}{m.group(2)}›", text)


def parse(name: str, text: str, path: Path | str = "") -> Prompt:
    sections: dict[str, list[str]] = {}
    current = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        m = _SECTION.match(line)
        if m:
            if m.group(1) in sections:
                raise ConfigError(f"{path}:{lineno}: section [{m.group(1)}] appears twice")
            current = m.group(1)
            sections[current] = []
        elif current is None:
            if line.strip() and not line.lstrip().startswith("#"):
                raise ConfigError(f"{path}:{lineno}: text before the first [system]/[user] section")
        else:
            sections[current].append(line)
    if "user" not in sections:
        raise ConfigError(f"{path}: prompt file has no [user] section")
    body = {k: "\n".join(v).strip("\n") for k, v in sections.items()}
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
    return Prompt(name=name, template=text, version=f"{name}:{digest}",
                  system=body.get("system", ""), user=body["user"])


def load(name: str, directory: str | Path | None = None) -> Prompt:
    """The prompt `name` from `directory` (default: the packaged cotpd/prompts/)."""
    path = Path(directory or PROMPTS_DIR) / f"{name}.txt"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: prompt file not found") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 at byte {exc.start}") from None
    return parse(name, text, path)


def cot_prompt_name(grain: str, task: str) -> str:
    try:
        return COT_PROMPTS[task][grain]
    except KeyError:
        raise ConfigError(f"no CoT prompt for task {task!r} grain {grain!r}; "
                          f"grains are {sorted(COT_PROMPTS['ner'])}") from None


def prompts_version(names, directory: str | Path | None = None) -> str:
    """One short hash over several prompts' versions (a Dagster asset's code version)."""
    versions = sorted(load(n, directory).version for n in names)
    return hashlib.sha256("\n".join(versions).encode("utf-8")).hexdigest()[:12]


def stage_prompts(stage: str) -> list[str]:
    """The prompt files a stage reads (so an orchestrator can version the stage by them)."""
    if stage == "knowledge":
        return sorted({n for per_task in COT_PROMPTS.values() for n in per_task.values()})
    if stage == "augment":
        return list(AUGMENT_PROMPTS)
    if stage == "captions":
        return list(CAPTION_PROMPTS)
    return []
