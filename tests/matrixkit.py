"""Helpers for the matrix tests: tiny models, a prompt set, a corpus, a matrix TOML file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import PROMPTS, text_corpus
from tinymodel import write_tiny_model

CANDIDATES = ["ctk=q8_0,ctv=q8_0", "ctk=q4_0,ctv=q4_0"]
# fast settings for tiny models on a shared 2-core machine (one thread: see test_cli)
SETTINGS: dict[str, Any] = {
    "prompts": "prompts.jsonl", "corpus": "corpus.txt", "chunks": 2, "ctx": 64,
    "n_predict": 8, "threads": 1,
}
# fields that legitimately differ between two runs of the same cell
VOLATILE = ("timestamp", "timings", "environment", "repro_command")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def write_matrix(
    d: Path,
    models: list[tuple[str, str]],
    *,
    candidates: list[str] | None = None,
    settings: dict[str, Any] | None = None,
    reference: str = "ctk=f16,ctv=f16",
    extra: str = "",
) -> Path:
    """A matrix TOML file in ``d`` (models as (name, path) pairs) beside its inputs."""
    (d / "prompts.jsonl").write_text("".join(json.dumps(x) + "\n" for x in PROMPTS[:2]))
    if not (d / "corpus.txt").exists():
        (d / "corpus.txt").write_text(text_corpus(400))
    lines = [f"reference = {toml_value(reference)}",
             f"candidates = {toml_value(candidates if candidates is not None else CANDIDATES)}",
             extra, "[settings]"]
    for key, value in (SETTINGS if settings is None else settings).items():
        lines.append(f"{key} = {toml_value(value)}")
    for name, path in models:
        lines += ["[[models]]", f"name = {toml_value(name)}", f"path = {toml_value(path)}"]
    p = d / "matrix.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def tiny_models(d: Path) -> list[tuple[str, str]]:
    """Two different tiny models (written once per directory)."""
    for name, seed in (("a.gguf", 0), ("b.gguf", 5)):
        if not (d / name).exists():
            write_tiny_model(d / name, seed=seed)
    return [("Tiny A", "a.gguf"), ("Tiny B", "b.gguf")]


def broken_gguf(path: Path) -> Path:
    """A file with the GGUF magic (so the up-front check passes) that llama.cpp cannot load."""
    path.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    return path


def status(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "matrix-status.jsonl").read_text().splitlines()]


def stable(report: dict[str, Any]) -> dict[str, Any]:
    """A report without the fields that differ between two runs of the same cell."""
    out = {k: v for k, v in report.items() if k not in VOLATILE}
    extras = dict(out.get("extras") or {})
    out["extras"] = extras
    return out
