"""A matrix file (TOML) → :class:`MatrixSpec`, with every cheap check done up front.

.. code-block:: toml

    reference = "ctk=f16,ctv=f16"
    candidates = ["ctk=q8_0,ctv=q8_0", "ctk=q4_0,ctv=q4_0"]
    [settings]            # refract score options, '-' written '_'
    chunks = 32
    [[models]]
    name = "Gemma 3 270M"
    path = "models/gemma-3-270m.gguf"   # relative to the TOML file; "demo": the demo model
    sweep = true          # this model gets a `refract sweep` instead of the candidates
    [sweep]               # optional: the sweep's settings (every model sweeps when present,
    types = "q8_0,q4_0"   # unless it says sweep = false); keys: types, pairs, band,
    band = "PASS"         # confidence, prune, first_round, first_round_axes, memory_ctx

A swept model's cells are the configs of its grid; they run as one job (one worker, one model
load: the sweep's first round and its survivors), write ``<model-slug>.sweep.json`` beside the
reports, and are done on a rerun when that file and every report it names are whole and from
the same settings. ``candidates`` may be left out when every model sweeps.

Every mistake is a :class:`refract.errors.UsageError` (one line, exit 2) raised before any
model loads.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from refract.defaults import DEFAULT_REFERENCE, DEMO
from refract.errors import UsageError
from refract.files import slug
from refract.inputs.model import resolve_model
from refract.kvconfig import KVConfig
from refract.matrix import scoring
from refract.options import ScoreOptions
from refract.progress import Reporter
from refract.scoring.plan import check_kv, known_kv_types

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["MatrixSpec", "ModelEntry", "check_settings", "load_spec", "parse_spec",
           "sweep_settings"]

TOP_KEYS = ("reference", "candidates", "settings", "models", "sweep")
MODEL_KEYS = ("name", "path", "sweep")
SWEEP_KEYS = ("types", "pairs", "band", "confidence", "prune", "first_round",
              "first_round_axes", "memory_ctx")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    """Resolved to an absolute path (relative paths are relative to the TOML file)."""
    demo: bool = False
    """Written as ``demo``: scored as ``refract score --model demo`` (its default corpus)."""
    sweep: bool = False
    """Swept (``refract sweep``: its cells are the sweep grid) instead of scored on the
    matrix's candidates."""

    @property
    def arg(self) -> str:
        """What the worker passes to the scorer as the model."""
        return DEMO if self.demo else str(self.path)


@dataclass(frozen=True)
class MatrixSpec:
    source: Path | None
    reference: str
    candidates: tuple[str, ...]
    """Candidate KV configs, as canonical labels (``ctk=…,ctv=…``)."""
    models: tuple[ModelEntry, ...]
    settings: dict[str, Any]
    """The ``[settings]`` table as written (what the workers rebuild the options from)."""
    base_dir: Path
    options: ScoreOptions
    """The options every cell runs with (``[settings]`` + ``reference``)."""
    sweep: dict[str, Any] | None = None
    """The ``[sweep]`` table as written (``{}`` when only models ask for a sweep), or None."""

    def sweep_settings(self) -> Any:
        """The :class:`refract.sweep.SweepSettings` of the swept models."""
        return sweep_settings(self.sweep or {})

    def grid(self) -> list[str]:
        """The labels a swept model's sweep scores (the build's grid, before the model says
        which it can run)."""
        from refract.scoring.plan import known_kv_types
        from refract.sweep.grid import build_grid
        from refract.sweep.run import row_size

        st = self.sweep_settings()
        return [e.label for e in build_grid(known_kv_types() or [], row_size, types=st.types,
                                            pairs=st.pairs, reference=self.reference)]

    def cells_of(self, model: ModelEntry) -> list[str]:
        """The candidates of a model's cells: the sweep grid when it sweeps."""
        return self.grid() if model.sweep else list(self.candidates)

    @property
    def fingerprint(self) -> str:
        return self.options.fingerprint()


def sweep_settings(table: Mapping[str, Any]) -> Any:
    """A ``[sweep]`` table → :class:`refract.sweep.SweepSettings` (UsageError if bad)."""
    from refract.sweep.run import SweepSettings

    kw: dict[str, Any] = {}
    for key, value in table.items():
        if key not in SWEEP_KEYS:
            raise UsageError(f"[sweep]: unknown key {key!r} (expected: {', '.join(SWEEP_KEYS)})")
        if key in ("types", "pairs"):
            if isinstance(value, list):
                value = ",".join(str(v) for v in value)
            if not isinstance(value, str):
                raise UsageError(f"[sweep] {key} must be a string or a list of strings")
        elif key == "first_round_axes":
            if not isinstance(value, str):
                raise UsageError("[sweep] first_round_axes must be \"trajectory\" or \"all\"")
        elif key == "band":
            if not isinstance(value, str):
                raise UsageError("[sweep] band must be a string such as \"PASS\"")
            key = "target_band"
        elif key in ("confidence", "first_round"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UsageError(f"[sweep] {key} must be a number")
            value = float(value)
        elif key == "prune":
            if not isinstance(value, bool):
                raise UsageError("[sweep] prune must be true or false")
        elif key == "memory_ctx":
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
                raise UsageError("[sweep] memory_ctx must be a number of tokens or a list")
            value = tuple(items)
        kw[key] = value
    settings = SweepSettings(**kw)
    try:
        settings.check()
    except UsageError as exc:
        raise UsageError(f"[sweep]: {exc}") from None
    return settings


def _kv(text: Any, what: str, known: Sequence[str] | None) -> KVConfig:
    if not isinstance(text, str):
        raise UsageError(f"{what} must be a KV config string like 'ctk=q8_0,ctv=q8_0', "
                         f"got {text!r}")
    return check_kv(text, what, known)


def load_spec(path: str | os.PathLike[str]) -> MatrixSpec:
    """Read and check a matrix TOML file (no model is loaded)."""
    p = Path(path).expanduser()
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"matrix file not found: {str(p)!r}") from None
    except IsADirectoryError:
        raise UsageError(f"matrix file {str(p)!r} is a directory") from None
    except OSError as exc:
        raise UsageError(f"cannot read matrix file {str(p)!r}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UsageError(f"matrix file {str(p)!r} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"matrix file {str(p)!r} is not valid TOML: {exc}") from None
    return parse_spec(data, base_dir=p.resolve().parent, source=p)


def parse_spec(
    data: Mapping[str, Any], *, base_dir: Path, source: Path | None = None
) -> MatrixSpec:
    """Check a parsed matrix table; see the module docstring for its shape."""
    where = str(source) if source is not None else "matrix"
    for key in data:
        if key not in TOP_KEYS:
            raise UsageError(f"{where}: unknown key {key!r} (expected: {', '.join(TOP_KEYS)})")
    known = known_kv_types()
    reference = _kv(data.get("reference", DEFAULT_REFERENCE), "reference", known).label

    sweep_table = data.get("sweep")
    if sweep_table is not None and not isinstance(sweep_table, dict):
        raise UsageError(f"{where}: [sweep] must be a table")
    if sweep_table is not None:
        sweep_settings(sweep_table)  # its mistakes, before any model
    raw_models = data.get("models")
    every_sweeps = isinstance(raw_models, list) and bool(raw_models) and all(
        isinstance(m, dict) and m.get("sweep", sweep_table is not None) is True
        for m in raw_models)
    cands = data.get("candidates")
    if cands is None and every_sweeps:
        cands = []
    elif not isinstance(cands, list) or not cands:
        raise UsageError(f"{where}: 'candidates' must be a non-empty list of KV config strings")
    candidates: list[str] = []
    for i, text in enumerate(cands):
        label = _kv(text, f"candidates[{i}]", known).label
        if label in candidates:
            raise UsageError(f"candidates[{i}] {text!r}: duplicate candidate (same as "
                             f"candidates[{candidates.index(label)}])")
        candidates.append(label)

    settings = data.get("settings", {})
    if not isinstance(settings, dict):
        raise UsageError(f"{where}: [settings] must be a table")
    options = scoring.make_options(settings, reference, base_dir=base_dir)

    entries = data.get("models")
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"{where}: no models (add [[models]] tables with a name and a path)")
    models: list[ModelEntry] = []
    seen_paths: dict[Path, int] = {}
    seen_slugs: dict[str, int] = {}
    for i, entry in enumerate(entries):
        what = f"models[{i}]"
        if not isinstance(entry, dict):
            raise UsageError(f"{what} must be a table with 'name' and 'path'")
        for key in entry:
            if key not in MODEL_KEYS:
                raise UsageError(f"{what}: unknown key {key!r} (expected: name, path, sweep)")
        swept = entry.get("sweep", sweep_table is not None)
        if not isinstance(swept, bool):
            raise UsageError(f"{what}: 'sweep' must be true or false")
        text = entry.get("path")
        if not isinstance(text, str) or not text:
            raise UsageError(f"{what}: 'path' must be a GGUF file path")
        raw_path = Path(text).expanduser()
        full = raw_path if raw_path.is_absolute() else base_dir / raw_path
        demo = text == DEMO and not full.exists()  # 'demo': the demo extra's model
        try:
            resolved = resolve_model(DEMO if demo else str(full)).resolve()
        except UsageError as exc:
            raise UsageError(f"{what}: {exc}") from None
        name = entry.get("name", resolved.stem if demo else full.stem)
        if not isinstance(name, str) or not name.strip():
            raise UsageError(f"{what}: 'name' must be a non-empty string")
        if resolved in seen_paths:
            raise UsageError(f"{what} {text!r}: duplicate model (same file as "
                             f"models[{seen_paths[resolved]}])")
        seen_paths[resolved] = i
        s = slug(name)
        if s in seen_slugs:
            raise UsageError(f"{what} name {name!r}: duplicate model name (models"
                             f"[{seen_slugs[s]}] has the same file-name form {s!r})")
        seen_slugs[s] = i
        models.append(ModelEntry(name=name.strip(), path=resolved, demo=demo, sweep=swept))

    return MatrixSpec(
        source=source, reference=reference, candidates=tuple(candidates), models=tuple(models),
        settings=dict(settings), base_dir=base_dir, options=options,
        sweep=(dict(sweep_table) if sweep_table is not None
               else ({} if any(m.sweep for m in models) else None)),
    )


def check_settings(spec: MatrixSpec, reporter: Reporter | None = None) -> None:
    """The score's own up-front checks (prompts, corpus, value ranges) on the first model.

    This may fetch the default corpus once (unless ``no_auto_fetch``), so workers find it
    cached.
    """
    first = spec.models[0]
    scoring.prepare_model(first.arg, spec.cells_of(first), spec.options, reporter=reporter)
