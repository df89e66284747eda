"""The one place where the matrix meets ``refract.score``'s API.

Two API generations are supported so that the matrix works before and after the move to
:class:`refract.options.ScoreOptions` and multi-candidate scoring:

* new: ``ScoreOptions.from_mapping`` / ``prepare_score(model, candidates, options)`` /
  ``execute_score(plan) -> list[dict]``;
* old: ``prepare_score(model, candidate, reference, **kwargs)`` /
  ``execute_score(plan, engine=...) -> dict`` (one engine shared by the candidates, so each
  model loads once and the reference results are cached in it).

Everything else in :mod:`refract.matrix` goes through :func:`make_options`,
:func:`prepare_model` and :func:`score_candidates`.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import orjson

from refract.progress import Reporter
from refract.score import DEFAULT_REFERENCE, UsageError

__all__ = ["NEW_API", "make_options", "options_fingerprint", "prepare_model", "score_candidates"]


def _new_api() -> bool:
    try:
        from refract.options import ScoreOptions  # noqa: F401
    except ImportError:
        return False
    from refract.score import prepare_score

    params = list(inspect.signature(prepare_score).parameters)
    return len(params) >= 2 and params[1] == "candidates"


NEW_API = _new_api()


# --------------------------------------------------------------------------- options (old API)


@dataclass(frozen=True)
class FallbackOptions:
    """The ``refract score`` options a matrix ``[settings]`` table may set (old API only)."""

    full: bool = False
    axis_rniah: bool = False
    axis_plad: bool = False
    skip_trajectory: bool = False
    skip_kld: bool = False
    measure_floor: bool = False
    prompts: str | None = None
    corpus: str | None = None
    rniah_haystack: str | None = None
    chunks: int = 32
    ctx: int = 512
    n_predict: int = 128
    seed: int = 42
    chat_template: bool = False
    rniah_up_to: int = 16384
    rniah_lengths: tuple[int, ...] | None = None
    rniah_positions: tuple[float, ...] = (0.1, 0.5, 0.9)
    rniah_trials: int = 1
    rniah_n_predict: int = 256
    threads: int | None = None
    n_gpu_layers: int = -1
    no_auto_fetch: bool = False
    reference: str = DEFAULT_REFERENCE

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], *, base_dir: Path | None = None
    ) -> FallbackOptions:
        from refract.score import parse_float_list, parse_int_list

        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise UsageError(
                    f"[settings]: unknown key {key!r} (known: {', '.join(sorted(known))})"
                )
            default = known[key].default
            what = f"[settings] {key}"
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise UsageError(f"{what} must be true or false, got {value!r}")
            elif key in ("prompts", "corpus", "rniah_haystack"):
                if not isinstance(value, str) or not value:
                    raise UsageError(f"{what} must be a file path (a string), got {value!r}")
                p = Path(value).expanduser()
                if base_dir is not None and not p.is_absolute():
                    p = base_dir / p
                value = str(p)
            elif key == "reference":
                if not isinstance(value, str):
                    raise UsageError(f"{what} must be a KV config string, got {value!r}")
            elif key == "rniah_lengths":
                if isinstance(value, str):
                    value = parse_int_list(value, what)
                elif isinstance(value, list) and all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value
                ) and value:
                    value = tuple(value)
                else:
                    raise UsageError(f"{what} must be a list of positive integers, got {value!r}")
            elif key == "rniah_positions":
                if isinstance(value, str):
                    value = parse_float_list(value, what)
                elif isinstance(value, list) and value and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1
                    for v in value
                ):
                    value = tuple(float(v) for v in value)
                else:
                    raise UsageError(f"{what} must be a list of fractions in [0, 1], got {value!r}")
            else:  # integers
                minimum = {"ctx": 16, "n_gpu_layers": -1, "seed": -(2**63)}.get(key, 1)
                if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                    raise UsageError(f"{what} must be an integer >= {minimum}, got {value!r}")
            values[key] = value
        return cls(**values)

    def settings(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("rniah_lengths", "rniah_positions"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    def fingerprint(self) -> str:
        data = self.settings()
        for key in ("threads", "no_auto_fetch"):
            data.pop(key)
        return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]

    def prepare_kwargs(self) -> dict[str, Any]:
        return dict(
            trajectory=not self.skip_trajectory, kld=not self.skip_kld,
            rniah=self.full or self.axis_rniah, plad=self.full or self.axis_plad,
            measure_floor=self.measure_floor, prompts=self.prompts, corpus=self.corpus,
            rniah_haystack=self.rniah_haystack, chunks=self.chunks, ctx=self.ctx,
            n_predict=self.n_predict, seed=self.seed, chat_template=self.chat_template,
            rniah_up_to=self.rniah_up_to, rniah_lengths=self.rniah_lengths,
            rniah_positions=self.rniah_positions, rniah_trials=self.rniah_trials,
            rniah_n_predict=self.rniah_n_predict, threads=self.threads,
            n_gpu_layers=self.n_gpu_layers, auto_fetch=not self.no_auto_fetch,
        )


def make_options(settings: Mapping[str, Any], reference: str, *, base_dir: Path | None) -> Any:
    """``[settings]`` + the matrix reference → a score options object (UsageError if bad)."""
    data = dict(settings)
    if "reference" in data and data["reference"] != reference:
        raise UsageError(
            "[settings] reference differs from the top-level reference: set it in one place"
        )
    data["reference"] = reference
    if NEW_API:
        from refract.options import ScoreOptions

        return ScoreOptions.from_mapping(data, base_dir=base_dir)
    return FallbackOptions.from_mapping(data, base_dir=base_dir)


def options_fingerprint(options: Any) -> str:
    return str(options.fingerprint())


def options_settings(options: Any) -> dict[str, Any]:
    return dict(options.settings())


# --------------------------------------------------------------------------- scoring

Plan = Any


def prepare_model(
    model: str | os.PathLike[str],
    candidates: Sequence[str],
    options: Any,
    *,
    reporter: Reporter | None = None,
) -> list[Plan]:
    """Validate one model's cells without loading it (UsageError on a bad value)."""
    from refract.score import prepare_score

    if NEW_API:
        return [prepare_score(model, list(candidates), options, reporter=reporter)]
    kwargs = options.prepare_kwargs()
    return [
        prepare_score(model, cand, options.reference, reporter=reporter, **kwargs)
        for cand in candidates
    ]


def score_candidates(
    model: str | os.PathLike[str],
    candidates: Sequence[str],
    options: Any,
    *,
    reporter: Reporter | None = None,
    on_start: Callable[[str], None] | None = None,
    on_report: Callable[[str, dict[str, Any]], None],
    on_error: Callable[[str, BaseException], None],
) -> None:
    """Score every candidate on one model load: ``on_report(candidate, report)`` per cell.

    A Python exception while scoring one candidate fails that candidate only (old API; the
    new API scores the candidates together, so an exception fails them all).
    """
    from refract.score import execute_score

    plans = prepare_model(model, candidates, options, reporter=reporter)
    if NEW_API:
        for cand in candidates:
            if on_start is not None:
                on_start(cand)
        try:
            reports = execute_score(plans[0], reporter=reporter)
        except Exception as exc:
            for cand in candidates:
                on_error(cand, exc)
            return
        for cand, report in zip(candidates, reports, strict=True):
            on_report(cand, report)
        return

    from refract.engine import Engine

    first = plans[0]
    engine = Engine(first.model_path, n_threads=first.threads, n_gpu_layers=first.n_gpu_layers,
                    seed=first.seed)
    try:
        for cand, plan in zip(candidates, plans, strict=True):
            if on_start is not None:
                on_start(cand)
            try:
                report = execute_score(plan, reporter=reporter, engine=engine)
            except Exception as exc:
                on_error(cand, exc)
                continue
            on_report(cand, report)
    finally:
        engine.close()
