"""ScoreOptions: every setting of a score run, its default, its check, its CLI flag, its JSON
settings entry and its repro-command form, in one place.

``refract score``, ``refract repeatability`` and ``refract matrix`` (TOML ``[settings]``) all
build a :class:`ScoreOptions`; the report's ``settings`` and ``repro_command`` come from it.
Adding an option means adding one field here (and using it where it takes effect): the typer
commands get their ``--flag`` from :func:`with_score_options`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import orjson

from refract.axes import registry
from refract.axes.trajectory import TRAJECTORY_METHODS, TrajectoryMethod
from refract.defaults import DEFAULT_REFERENCE
from refract.errors import UsageError

DEFAULT_RNIAH_POSITIONS: tuple[float, ...] = (0.10, 0.50, 0.90)
DEFAULT_RNIAH_UP_TO = 16384
DEFAULT_RNIAH_N_PREDICT = 256
#: integer options reach C++ ``int``: bound them well inside 32 bits
INT32_MAX = 2**31 - 1

__all__ = [
    "DEFAULT_REFERENCE",
    "ScoreOptions",
    "UsageError",
    "parse_float_list",
    "parse_int_list",
    "with_score_options",
]


# --------------------------------------------------------------------------- list parsing


def _parse_list(
    text: str, what: str, convert: type, one: str, many: str
) -> list[tuple[str, Any]]:
    """(item as written, converted value) for each comma-separated item; bad ones are errors."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise UsageError(f"{what}: expected a comma-separated list of {many}, got {text!r}")
    out = []
    for item in items:
        try:
            out.append((item, convert(item)))
        except ValueError:
            raise UsageError(f"{what}: {item!r} is not {one} (in {text!r})") from None
    return out


def parse_int_list(text: str, what: str, *, minimum: int = 1) -> tuple[int, ...]:
    """``"4096,8192"`` → ``(4096, 8192)``; a bad item is a :class:`UsageError` naming it."""
    out = [value for _, value in _parse_list(text, what, int, "an integer", "integers")]
    for value in out:
        if value < minimum:
            raise UsageError(f"{what}: {value} is below the minimum {minimum} (in {text!r})")
        if value > INT32_MAX:
            raise UsageError(f"{what}: {value} is above the maximum {INT32_MAX} (in {text!r})")
    return tuple(out)


def parse_float_list(
    text: str, what: str, *, low: float = 0.0, high: float = 1.0
) -> tuple[float, ...]:
    """``"0.1,0.5"`` → ``(0.1, 0.5)``; every item must lie in [low, high]."""
    out = _parse_list(text, what, float, "a number", "numbers")
    for item, value in out:
        if not (math.isfinite(value) and low <= value <= high):
            raise UsageError(f"{what}: {item!r} is outside [{low:g}, {high:g}] (in {text!r})")
    return tuple(value for _, value in out)


# --------------------------------------------------------------------------- field metadata


@dataclass(frozen=True)
class _Meta:
    help: str
    flags: tuple[str, ...] = ()  # extra short flags beside --name
    low: int | None = None
    high: int | None = None
    #: does the option change the numbers (part of the fingerprint)?
    measured: bool = True


def _opt(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"refract": _Meta(help=help, **kw)})


def _meta(f: dataclasses.Field[Any]) -> _Meta:
    return f.metadata["refract"]  # type: ignore[no-any-return]


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class ScoreOptions:
    """Every setting of a score run (not the model and candidates). Validated on creation."""

    reference: str = _opt(DEFAULT_REFERENCE, "Reference KV config.")
    full: bool = _opt(False, "All four axes (adds R-NIAH and PLAD).")
    axis_rniah: bool = _opt(False, "Add Axis C (R-NIAH).")
    axis_plad: bool = _opt(False, "Add Axis D (PLAD).")
    skip_trajectory: bool = _opt(False, "Skip Axis A.")
    skip_kld: bool = _opt(False, "Skip Axis B.")
    measure_floor: bool = _opt(
        False, "Run A and B ref-vs-ref first; abort (exit 2) if unclean."
    )
    noise_floor: bool = _opt(
        True,
        "Measure Trajectory's numerical-noise floor beside its score: the reference against "
        "itself with the batch order reversed (one more reference decode, shared by every "
        "candidate).",
    )
    sequential: bool = _opt(
        False,
        "Decode trajectories one prompt at a time (token-identical to llama-completion; "
        "slower than the default batched decode).",
    )
    trajectory_method: str | None = _opt(
        None,
        "How Trajectory finds each candidate's prefix: verify (teacher-force the candidate "
        "along the reference trajectories, decode only what that cannot settle; the default) "
        "or decode (greedy-decode every candidate; the default with --sequential).",
    )
    prompts: str | None = _opt(None, "JSONL prompt set (default: the bundled set).")
    corpus: str | None = _opt(
        None, "KLD corpus text file, or 'bundled' (default: WikiText-2 test; demo: bundled)."
    )
    rniah_haystack: str | None = _opt(
        None, "R-NIAH haystack text file, or 'bundled' (default: WikiText-2 train)."
    )
    chunks: int = _opt(32, "KLD chunks.", low=1, high=1_000_000)
    ctx: int = _opt(512, "KLD / trajectory context size.", low=16, high=1 << 22)
    n_predict: int = _opt(128, "Tokens per generation.", low=1, high=1 << 20)
    seed: int = _opt(42, "Seed (PLAD perturbations, R-NIAH trials).", low=0, high=2**63 - 1)
    chat_template: bool = _opt(False, "Trajectory prompts through the model's chat template.")
    rniah_up_to: int = _opt(
        DEFAULT_RNIAH_UP_TO,
        "Longest R-NIAH length (4096 doubling up to it; below 4096: that single length).",
        low=1, high=1 << 24,
    )
    rniah_lengths: tuple[int, ...] | None = _opt(
        None, "Explicit R-NIAH lengths, e.g. 4096,6000 (overrides --rniah-up-to)."
    )
    rniah_positions: tuple[float, ...] = _opt(
        DEFAULT_RNIAH_POSITIONS, "Needle positions as fractions, e.g. 0.1,0.5,0.9."
    )
    rniah_trials: int = _opt(1, "Trials per R-NIAH cell.", low=1, high=1000)
    rniah_n_predict: int = _opt(
        DEFAULT_RNIAH_N_PREDICT, "Tokens per R-NIAH answer.", low=1, high=1 << 20
    )
    until_decided: bool = _opt(
        False, "Work through the prompts and chunks in rounds and stop as soon as the "
        "composite's band is decided at --decide-confidence (the usual settings are the budget).",
    )
    decide_confidence: float = _opt(
        0.95, "Confidence at which --until-decided calls a band decided (0.5–0.999).")
    looks: int = _opt(4, "Rounds (planned looks) of --until-decided.", low=2, high=64)
    threads: int | None = _opt(
        None, "CPU threads (default: the CPUs this process may use: affinity mask, cgroup quota).",
        flags=("-t",), low=1, high=4096, measured=False)
    n_gpu_layers: int = _opt(-1, "Layers to offload (-1 = all).", flags=("-ngl",), low=-1,
                             high=1_000_000)
    no_auto_fetch: bool = _opt(
        False, "Never download WikiText-2; fail if not cached.", measured=False
    )
    reference_cache: bool = _opt(
        True, "Reuse reference results an earlier run stored for the same model, build, machine "
        "and settings (Trajectory's noise floor, R-NIAH and PLAD reference decodes), and store "
        "this run's ($REFRACT_CACHE_DIR/reference; `refract cache` lists and clears it).",
        measured=False)

    # ------------------------------------------------------------------ checks
    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            meta = _meta(f)
            if f.type in ("bool",) and not isinstance(value, bool):
                raise UsageError(f"{flag(f.name)} must be true or false, got {value!r}")
            if meta.low is not None and value is not None:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise UsageError(f"{flag(f.name)} must be an integer, got {value!r}")
                if not meta.low <= value <= (meta.high if meta.high is not None else value):
                    raise UsageError(
                        f"{flag(f.name)} must be an integer in [{meta.low}, {meta.high}], "
                        f"got {value}"
                    )
            if f.name in ("prompts", "corpus", "rniah_haystack", "reference") and value is not None:
                if not isinstance(value, str):
                    raise UsageError(f"{flag(f.name)} must be a string, got {value!r}")
                if not value.strip():
                    raise UsageError(f"{flag(f.name)} is empty")
        method = self.trajectory_method
        if method is not None and method not in TRAJECTORY_METHODS:
            raise UsageError(f"--trajectory-method must be verify or decode, got {method!r}")
        conf = self.decide_confidence
        if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not (
                math.isfinite(conf) and 0.5 <= conf <= 0.999):
            raise UsageError(f"--decide-confidence must be a number in [0.5, 0.999], got {conf!r}")
        if not self.axes:
            raise UsageError("every axis is switched off: nothing to score")
        lengths = self.rniah_lengths
        if lengths is not None:
            if not lengths:
                raise UsageError("--rniah-lengths is empty")
            for x in lengths:
                if isinstance(x, bool) or not isinstance(x, int) or not 1 <= x <= INT32_MAX:
                    raise UsageError(f"--rniah-lengths: {x!r} is not a positive integer")
            if len(set(lengths)) != len(lengths):
                raise UsageError(f"--rniah-lengths has duplicates: {list(lengths)}")
        pos = self.rniah_positions
        if not pos or any(
            isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p)
            or not 0.0 <= p <= 1.0 for p in pos
        ):
            raise UsageError(f"--rniah-positions must be fractions in [0, 1], got {list(pos)}")

    # ------------------------------------------------------------------ derived
    @property
    def trajectory(self) -> bool:
        return not self.skip_trajectory

    @property
    def kld(self) -> bool:
        return not self.skip_kld

    @property
    def rniah(self) -> bool:
        return self.full or self.axis_rniah

    @property
    def plad(self) -> bool:
        return self.full or self.axis_plad

    @property
    def gtm_method(self) -> TrajectoryMethod:
        """Trajectory's method: as asked, else decode for --sequential and verify otherwise."""
        if self.trajectory_method == "decode" or (
                self.trajectory_method is None and self.sequential):
            return "decode"
        return "verify"

    @property
    def with_noise_floor(self) -> bool:
        """Measure Trajectory's noise floor (on unless switched off, and only with Axis A)."""
        return self.trajectory and self.noise_floor

    @property
    def axes(self) -> list[str]:
        """The registered axes these options switch on, in report order."""
        return [a.key for a in registry if a.enabled(self)]

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_mapping(
        cls, values: Mapping[str, Any], *, base_dir: Path | None = None
    ) -> ScoreOptions:
        """From a mapping of option names (``-`` or ``_``), e.g. a TOML ``[settings]`` table.

        List options take a list or a comma-separated string; relative file paths are
        resolved against ``base_dir``. Unknown names are a :class:`UsageError`.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        kw: dict[str, Any] = {}
        for raw_key, value in values.items():
            key = str(raw_key).replace("-", "_")
            if key not in names:
                raise UsageError(
                    f"unknown setting {raw_key!r} (known: {', '.join(sorted(names))})"
                )
            if key == "rniah_lengths" and value is not None:
                value = (parse_int_list(value, "--rniah-lengths") if isinstance(value, str)
                         else _tuple(value, "--rniah-lengths"))
            elif key == "rniah_positions":
                value = (parse_float_list(value, "--rniah-positions") if isinstance(value, str)
                         else _tuple(value, "--rniah-positions"))
            elif key in ("prompts", "corpus", "rniah_haystack") and value is not None:
                if not isinstance(value, str):
                    raise UsageError(f"{flag(key)} must be a file path, got {value!r}")
                if base_dir is not None and value != "bundled" and value.strip():
                    p = Path(value).expanduser()
                    value = str(p if p.is_absolute() else base_dir / p)
            kw[key] = value
        return cls(**kw)

    @classmethod
    def from_cli(cls, values: Mapping[str, Any]) -> ScoreOptions:
        """From typer's parsed values (list options arrive as comma-separated strings)."""
        kw = dict(values)
        for key in ("prompts", "corpus", "rniah_haystack"):
            if isinstance(kw.get(key), os.PathLike):
                kw[key] = os.fspath(kw[key])
        return cls.from_mapping(kw)

    def replace(self, **changes: Any) -> ScoreOptions:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ outputs
    def settings(self) -> dict[str, Any]:
        """Every option (JSON-able) plus the axes that run and the fingerprint."""
        out: dict[str, Any] = {"axes": self.axes}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out["noise_floor"] = self.with_noise_floor
        out["trajectory_method"] = self.gtm_method
        out["fingerprint"] = self.fingerprint()
        return out

    def fingerprint(self) -> str:
        """SHA-256 (16 hex) of every option that changes the numbers."""
        measured = {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
            for f in dataclasses.fields(self) if _meta(f).measured
        }
        # options that only select axes are folded into the axes list
        measured["axes"] = self.axes
        measured["noise_floor"] = self.with_noise_floor
        measured["trajectory_method"] = self.gtm_method
        for key in ("full", "axis_rniah", "axis_plad", "skip_trajectory", "skip_kld"):
            measured.pop(key)
        if not self.until_decided:  # a full-budget run: what a run before them measured
            for key in ("until_decided", "decide_confidence", "looks"):
                measured.pop(key)
        blob = orjson.dumps(measured, option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(blob).hexdigest()[:16]

    def cli_args(self) -> list[str]:
        """The ``refract score`` flags that repeat these options (defaults left out)."""
        args: list[str] = []
        for f in dataclasses.fields(self):
            value, default = getattr(self, f.name), f.default
            if value == default:
                continue
            if isinstance(value, bool):
                args.append(flag(f.name) if value else "--no-" + flag(f.name)[2:])
            elif isinstance(value, tuple):
                args += [flag(f.name), ",".join(f"{x:g}" if isinstance(x, float) else str(x)
                                                for x in value)]
            else:
                args += [flag(f.name), str(value)]
        return args


def _tuple(value: Any, what: str) -> tuple[Any, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    raise UsageError(f"{what} must be a list, got {value!r}")


# --------------------------------------------------------------------------- typer glue


def _cli_type(f: dataclasses.Field[Any]) -> Any:
    t = str(f.type)
    if t == "bool":
        return bool
    if t == "int":
        return int
    if t == "int | None":
        return int | None
    if t == "float":
        return float
    return str | None if f.default is None else str


def _cli_default(f: dataclasses.Field[Any]) -> Any:
    if isinstance(f.default, tuple):
        return ",".join(f"{x:g}" for x in f.default)
    return f.default


def with_score_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give a typer command one ``--flag`` per :class:`ScoreOptions` field.

    ``fn`` takes ``opts: ScoreOptions`` plus its own parameters; the wrapper collects the
    score flags into ``opts`` (a bad value is a :class:`UsageError`).
    """
    import typer

    own = [p for p in inspect.signature(fn, eval_str=True).parameters.values()
           if p.name != "opts"]
    fields = dataclasses.fields(ScoreOptions)
    option_params = []
    for f in fields:
        meta = _meta(f)
        # a flag that is on by default can be switched off: --x/--no-x
        name = flag(f.name)
        if f.default is True:
            name = f"{name}/--no-{name[2:]}"
        annotation = Annotated[  # type: ignore[valid-type]
            _cli_type(f), typer.Option(name, *meta.flags, help=meta.help,
                                       show_default=f.default not in (None, False, True))
        ]
        option_params.append(inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, default=_cli_default(f),
            annotation=annotation,
        ))
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + option_params
    names = {f.name for f in fields}

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> Any:
        values = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
        return fn(opts=values, **kwargs)  # the command builds ScoreOptions inside its guard

    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    del wrapper.__wrapped__  # typer must see the new signature, not fn's
    return wrapper

