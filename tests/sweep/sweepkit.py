"""Helpers of the sweep tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: report keys that differ between two runs of the same numbers (when, how long, which run)
VOLATILE = {"timestamp", "timings", "notes", "repro_command", "environment", "generator",
            "framework_version", "settings", "provenance"}


def measured(report: dict[str, Any]) -> dict[str, Any]:
    """What a report measured: everything but the volatile keys, and no ``*_s`` timing."""

    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if not str(k).endswith("_s")}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    from refract.report.io import dumps_report

    as_written = json.loads(dumps_report(report))  # numpy arrays as the report file has them
    # what the reference store reused or stored says which run came first, not what it measured
    (as_written.get("extras") or {}).pop("reference_store", None)
    return strip({k: v for k, v in as_written.items() if k not in VOLATILE})


def write_inputs(d: Path, n_prompts: int = 12) -> tuple[Path, Path]:
    """A prompt set of ``n_prompts`` and a corpus for tiny-model sweeps."""
    prompts = d / "p.jsonl"
    prompts.write_text("".join(json.dumps(
        {"id": f"p{i}", "category": "factual",
         "prompt": f"What is the capital city number {i} of France?"}) + "\n"
        for i in range(n_prompts)))
    corpus = d / "c.txt"
    corpus.write_text("The big city of Paris is the capital of France. " * 800)
    return prompts, corpus
