"""Prompt sets for the trajectory (Axis A) and PLAD (Axis D) axes.

A prompt set is a JSONL file: one JSON object per line with the string fields ``id``,
``category`` and ``prompt`` (other fields, such as ``license``, are allowed and ignored).
Blank lines and lines whose first non-blank character is ``#`` are skipped. refract-llm's
``refract-prompts-v0.1.jsonl`` loads unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from refract.errors import PromptSetError
from refract.files import read_input_bytes

__all__ = [
    "BUNDLED_PROMPTS",
    "Prompt",
    "PromptSetError",
    "load_prompts",
    "parse_prompts",
]

#: File name of the bundled default prompt set inside the ``refract.prompts`` package.
BUNDLED_PROMPTS = "refract-prompts-v1.jsonl"

_FIELDS = ("id", "category", "prompt")


@dataclass(frozen=True, slots=True)
class Prompt:
    """One prompt of a prompt set."""

    id: str
    category: str
    prompt: str


def load_prompts(path: str | Path | None = None) -> list[Prompt]:
    """Load a JSONL prompt set; ``None`` loads the bundled set (refract-prompts-v1, CC0).

    Raises :class:`PromptSetError` for a missing file, a directory, unreadable or non-UTF-8
    content, a bad line, duplicate ids or an empty set.
    """
    if path is None:
        ref = resources.files("refract.prompts").joinpath(BUNDLED_PROMPTS)
        with resources.as_file(ref) as bundled:
            return _load_file(Path(bundled))
    return _load_file(Path(path))


def _load_file(path: Path) -> list[Prompt]:
    data = read_input_bytes(path, "prompt set", "a JSONL file", PromptSetError)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PromptSetError(
            f"prompt set {path}, line {line}: not valid UTF-8 (byte offset {exc.start})"
        ) from None
    return parse_prompts(text, source=str(path))


def parse_prompts(text: str, source: str = "<string>") -> list[Prompt]:
    """Parse prompt-set JSONL ``text``; ``source`` names it in error messages."""
    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    # split on "\n" only: str.splitlines() would also split on U+2028 etc. inside strings
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"prompt set {source}, line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PromptSetError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise PromptSetError(f"{where}: expected a JSON object, got {_json_type(obj)}")
        values: list[str] = []
        for field in _FIELDS:
            if field not in obj:
                raise PromptSetError(f"{where}: missing field {field!r}")
            value = obj[field]
            if not isinstance(value, str):
                raise PromptSetError(
                    f"{where}: field {field!r} must be a string, got {_json_type(value)}"
                )
            if not value.strip():
                raise PromptSetError(f"{where}: field {field!r} is empty")
            values.append(value)
        pid, category, prompt = values
        if pid in seen:
            raise PromptSetError(f"{where}: duplicate id {pid!r} (first used on line {seen[pid]})")
        seen[pid] = lineno
        prompts.append(Prompt(id=pid, category=category, prompt=prompt))
    if not prompts:
        raise PromptSetError(f"prompt set {source}: contains no prompts")
    return prompts


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
