"""How sure a score is: paired bootstrap intervals, band probabilities, paired differences and
the stopping rule of ``--until-decided`` (issue 22).

Every axis score is a function of a ratio of sums over its independent units::

    score = f(Σ num_i / Σ den_i)

Trajectory: prompts, num = prefix agreement, den = max(len_ref, len_cand), f = 100·clip(r);
KLD: chunks, num = the chunk's mean KLD, den = 1, f = 100·exp(−r); R-NIAH: cells, num =
degradation, den = 1, f = 100·(1 − r); PLAD: (prompt, perturbation) cells, num = cell score,
den = 1, f = r. An axis says so with :meth:`refract.axes.base.Axis.units`, from its report
entry alone, so a report's intervals can be recomputed from the report.

**Intervals** are BCa (bias-corrected and accelerated) intervals of a paired bootstrap over
the units: each replicate resamples an axis's units with replacement (a unit carries the
reference and the candidate together, so the comparison stays paired). The composite's
replicates are the harmonic means of its axes' replicates (the b-th replicate of every axis,
each axis resampled from its own seeded stream). The bias correction comes from the share of
replicates below the point, the acceleration from each statistic's empirical influence values
(per unit, through the harmonic mean for the composite: the delta method, which also gives the
standard error reported beside it). Where every unit agrees the interval is the point. The
method is named beside each interval. (Simulated on demo-sized data, a studentized bootstrap
covered 0.92 to 0.985 as the share of fully matching prompts changed; BCa stayed within
0.94-0.97: ``tests/test_uncertainty.py``.)

**Band probabilities** are read from the same calibrated replicates: the replicates' quantiles
at the BCa-corrected levels of an even grid, so their 2.5 and 97.5 percentiles are the 95 %
interval and their share in a band is the confidence that the score lies in it (an interval
inside one band is that band at ≥ 95 %).

**Decided runs** look at the evidence K times, at equal fractions of the budget, and spend
the error rate α over the looks with the Lan–DeMets Pocock-type function
``α(t) = α·ln(1 + (e − 1)·t)``: look k decides when one band holds at least
``1 − (α(t_k) − α(t_{k−1}))`` of the replicates and every axis in rounds has at least
:data:`MIN_DECISION_UNITS` units (α is spent at the looks before it all the same). The chance of
deciding a wrong band at any look
is at most that look's spend, so over all looks at most α (a union bound: valid however the
looks are correlated, and conservative).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Final, Literal

import numpy as np

from refract.bands import BAND_THRESHOLDS, BANDS, Band

DEFAULT_REPLICATES: Final[int] = 2000
DEFAULT_SEED: Final[int] = 42
DEFAULT_LEVEL: Final[float] = 0.95
DEFAULT_LOOKS: Final[int] = 4
METHOD: Final[str] = "paired-bootstrap-bca"
METHOD_VERSION: Final[str] = "1"
METHOD_TEXT: Final[str] = (
    "paired bootstrap over each axis's independent units, bias-corrected and accelerated (BCa; "
    "acceleration from the empirical influence values); the composite from joint replicates "
    "of its axes"
)
SEQUENTIAL_METHOD: Final[str] = (
    "group-sequential: planned looks at equal fractions of the budget, Lan-DeMets Pocock-type "
    "alpha spending alpha*ln(1+(e-1)t), each look's spend tested on the band probabilities "
    "(union bound over looks); no decision before 15 units per axis"
)
#: A look decides a band only once every axis in rounds has at least this many units: bootstrap
#: intervals from fewer are too optimistic for a decision (simulated near a band edge with 8
#: prompts and 8 chunks at the first look, the wrong-band rate reached 11 %; from 15, 2 %).
MIN_DECISION_UNITS: Final[int] = 15

Transform = Literal["ratio100", "exp100", "complement100", "identity"]


def _transform(kind: Transform) -> tuple[Callable[[np.ndarray], np.ndarray],
                                         Callable[[np.ndarray], np.ndarray]]:
    """(f, f') of a score transform of the ratio r."""
    if kind == "ratio100":
        return (lambda r: 100.0 * np.clip(r, 0.0, 1.0),
                lambda r: np.where((r >= 0.0) & (r <= 1.0), 100.0, 0.0))
    if kind == "exp100":
        return (lambda r: np.where(r <= 0.0, 100.0, 100.0 * np.exp(-np.maximum(r, 0.0))),
                lambda r: np.where(r <= 0.0, 0.0, -100.0 * np.exp(-np.maximum(r, 0.0))))
    if kind == "complement100":
        return (lambda r: 100.0 * (1.0 - r), lambda r: np.full_like(r, -100.0))
    if kind == "identity":
        return (lambda r: np.asarray(r, dtype=float), lambda r: np.ones_like(r))
    raise ValueError(f"unknown score transform {kind!r}")


@dataclass(frozen=True)
class Units:
    """An axis's independent units: its score is ``f(Σ num / Σ den)``."""

    unit: str
    ids: tuple[str, ...]
    num: np.ndarray
    den: np.ndarray
    transform: Transform

    def __post_init__(self) -> None:
        num = np.asarray(self.num, dtype=np.float64).reshape(-1)
        den = np.asarray(self.den, dtype=np.float64).reshape(-1)
        if num.shape != den.shape or len(self.ids) != num.size:
            raise ValueError("units: ids, num and den must have one entry per unit")
        object.__setattr__(self, "num", num)
        object.__setattr__(self, "den", den)

    @property
    def n(self) -> int:
        return int(self.num.size)

    def score(self) -> float:
        """The score from all units (equals the axis's reported score)."""
        rep = self.replicates(np.arange(self.n)[None, :])
        return float(rep.value[0])

    def reproduces(self, score: float | None) -> bool:
        """The units give this score (to 1e-6): a report's units are used only then, never to
        put an interval on a score they do not make."""
        got = self.score()
        return score is not None and math.isfinite(got) and abs(got - score) <= 1e-6 * max(
            1.0, abs(score))

    def subset(self, keep: Sequence[int]) -> Units:
        k = list(keep)
        return Units(self.unit, tuple(self.ids[i] for i in k), self.num[k], self.den[k],
                     self.transform)

    def replicates(self, idx: np.ndarray) -> Replicates:
        """The score and its per-unit influence in each row of resampled indices."""
        f, fp = _transform(self.transform)
        num, den = self.num[idx], self.den[idx]
        s, d = num.sum(axis=1), den.sum(axis=1)
        safe = np.where(d > 0, d, 1.0)
        r = np.where(d > 0, s / safe, 0.0)
        infl = fp(r)[:, None] * (num - r[:, None] * den) / safe[:, None]
        return Replicates(f(r), {"": infl})


@dataclass
class Replicates:
    """A statistic over B replicates with its per-unit influence values (one array per
    independently resampled group of units, shape (B, n_group))."""

    value: np.ndarray
    infl: dict[str, np.ndarray] = field(default_factory=dict)

    def se(self) -> np.ndarray:
        total = np.zeros_like(self.value, dtype=np.float64)
        for a in self.infl.values():
            n = a.shape[1]
            if n > 1:
                total += (a * a).sum(axis=1) * (n / (n - 1))
        return np.sqrt(total)

    def keyed(self, key: str) -> Replicates:
        """The same statistic with its (single) group of units named ``key``."""
        [infl] = self.infl.values()
        return Replicates(self.value, {key: infl})


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode())])


def draw(n: int, replicates: int, seed: int, key: str) -> np.ndarray:
    """Resampled unit indices (replicates × n) of one axis: seeded, reproducible."""
    return _rng(seed, key).integers(0, n, size=(replicates, n))


def harmonic(parts: Sequence[Replicates]) -> Replicates:
    """The composite (harmonic mean, any axis ≤ 0 → 0, cap 100) with its influence."""
    s = np.stack([p.value for p in parts])
    k = len(parts)
    bad = (s <= 0.0).any(axis=0) | np.isnan(s).any(axis=0)
    safe = np.where(s > 0.0, s, 1.0)
    h = k / (1.0 / safe).sum(axis=0)
    h = np.where(bad, 0.0, np.minimum(h, 100.0))
    infl: dict[str, np.ndarray] = {}
    for i, p in enumerate(parts):
        w = np.where(bad, 0.0, h * h / (k * safe[i] * safe[i]))
        for key, a in p.infl.items():
            infl[key] = w[:, None] * a
    return Replicates(h, infl)


def difference(a: Replicates, b: Replicates) -> Replicates:
    """a − b, paired (the same resampled units on both sides)."""
    infl = {k: a.infl[k] - b.infl.get(k, 0.0) for k in a.infl}
    for k in b.infl:
        infl.setdefault(k, -b.infl[k])
    return Replicates(a.value - b.value, infl)


_NORMAL = NormalDist()


def _cdf(z: float) -> float:
    return _NORMAL.cdf(z)


def _inv(p: float) -> float:
    return _NORMAL.inv_cdf(min(max(p, 1e-12), 1.0 - 1e-12))


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its BCa confidence distribution: interval ends (:meth:`quantile`)
    and the confidence that the statistic lies below a value (:meth:`cdf`), both from the
    sorted replicates with the bias correction ``z0`` and the acceleration ``acc``."""

    point: float
    se: float
    method: str
    level: float = DEFAULT_LEVEL
    boot: np.ndarray | None = None  # sorted replicates; None: exact (or undefined)
    z0: float = 0.0
    acc: float = 0.0
    lo: float = 0.0
    hi: float = 100.0
    #: units that all agree at the range's edge (no exactness claimed): the bound of
    #: :func:`unanimous`
    bound_n: int = 0

    def quantile(self, q: float) -> float:
        """The BCa ``q`` confidence limit."""
        if self.bound_n:
            span = self.hi - self.lo
            if self.point >= self.hi:
                return float(self.lo + span * q ** (1.0 / self.bound_n))
            return float(self.lo + span * (1.0 - (1.0 - q) ** (1.0 / self.bound_n)))
        if self.boot is None:
            return self.point
        w = self.z0 + _inv(q)
        level = _cdf(self.z0 + w / max(1.0 - self.acc * w, 1e-9))
        return float(min(self.hi, max(self.lo, np.quantile(self.boot, level))))

    def cdf(self, x: float) -> float:
        """Confidence that the statistic lies below ``x``."""
        if not math.isfinite(self.point):
            return math.nan
        if self.bound_n:
            t = min(1.0, max(0.0, (x - self.lo) / (self.hi - self.lo)))
            if self.point >= self.hi:
                return t ** self.bound_n
            return 1.0 - (1.0 - t) ** self.bound_n
        if self.boot is None:
            return 1.0 if self.point < x else 0.0
        if x > self.hi:
            return 1.0
        g = float(np.searchsorted(self.boot, x, side="left")) / self.boot.size
        if g <= 0.0 or x <= self.lo:
            return 0.0
        if g >= 1.0:
            return 1.0
        d = _inv(g) - self.z0
        den = 1.0 + self.acc * d
        if den <= 0.0:
            return 1.0 if d > 0 else 0.0
        return _cdf(d / den - self.z0)

    @property
    def interval(self) -> tuple[float, float]:
        a = (1.0 - self.level) / 2.0
        if self.bound_n:  # no disagreement seen: the interval ends at the point (Clopper-Pearson)
            return ((self.quantile(a), self.hi) if self.point >= self.hi
                    else (self.lo, self.quantile(1.0 - a)))
        lo, hi = self.quantile(a), self.quantile(1.0 - a)
        if self.method.startswith("percentile"):
            # a composite with a unanimous axis: its draws sit at or below that axis's point,
            # so the point is the interval's edge, never outside it
            lo, hi = min(lo, self.point), max(hi, self.point)
        return lo, hi

    def band_probabilities(self) -> dict[Band, float]:
        """Confidence of each band (they sum to 1; an undefined statistic is FAIL)."""
        if not math.isfinite(self.point):
            return {b: (1.0 if b == "FAIL" else 0.0) for b in BANDS}
        out: dict[Band, float] = {}
        above = 1.0
        for name, lower in BAND_THRESHOLDS:
            below = self.cdf(lower)
            out[name] = max(0.0, above - below)
            above = below
        out["FAIL"] = max(0.0, above)
        return {b: out[b] for b in BANDS}

    def prob_below(self, x: float) -> float:
        return self.cdf(x)

    def to_dict(self, *, bands: bool = True) -> dict[str, Any]:
        lo, hi = self.interval
        out: dict[str, Any] = {"point": self.point, "se": self.se, "ci95": [lo, hi],
                               "interval_method": self.method}
        if bands:
            out["band_probabilities"] = self.band_probabilities()
        return out


def estimate(point: Replicates, boot: Replicates, *, lo: float = 0.0, hi: float = 100.0,
             level: float = DEFAULT_LEVEL, percentile: str | None = None) -> Estimate:
    """The BCa confidence distribution of one statistic: the bias correction from the share of
    replicates below the point, the acceleration from its empirical influence values (the
    point where every unit agrees). ``percentile`` (its reason): no bias correction or
    acceleration, the plain percentile interval."""
    p = float(point.value[0])
    se0 = float(point.se()[0])
    v = np.sort(boot.value.astype(np.float64))
    if not math.isfinite(p):
        return Estimate(p, math.nan, "undefined", level, lo=lo, hi=hi)
    if se0 == 0.0 and v[0] == p and v[-1] == p:
        return Estimate(p, 0.0, "exact (every unit agrees)", level, lo=lo, hi=hi)
    if percentile is not None:
        return Estimate(p, se0, f"percentile ({percentile})", level, v, 0.0, 0.0, lo, hi)
    n = v.size
    below = (np.count_nonzero(v < p) + 0.5 * np.count_nonzero(v == p)) / n
    z0 = _NORMAL.inv_cdf(min(max(below, 0.5 / n), 1.0 - 0.5 / n))
    u = (np.concatenate([a.reshape(-1) for a in point.infl.values()]) if point.infl
         else np.zeros(1))
    s2 = float((u * u).sum())
    acc = float((u ** 3).sum()) / (6.0 * s2 ** 1.5) if s2 > 0.0 else 0.0
    return Estimate(p, se0, "BCa", level, v, z0, acc, lo, hi)


def decided_band(probs: Mapping[str, float], confidence: float) -> str | None:
    """The band holding at least ``confidence`` of the replicates, if one does."""
    for name in BANDS:
        if probs.get(name, 0.0) >= confidence:
            return name
    return None


def band_phrase(band_name: str | None, probs: Mapping[str, float] | None) -> str:
    """``"PASS — 97 % PASS, 3 % DEGRADED"`` (bands above 0.5 %, most likely first)."""
    if band_name is None:
        return "no band"
    if not probs:
        return band_name
    parts = [(p, b) for b, p in probs.items() if p >= 0.005]
    parts.sort(key=lambda pb: -pb[0])
    return f"{band_name} — " + ", ".join(f"{_pct(p)} {b}" for p, b in parts)


def _pct(p: float) -> str:
    if p >= 0.995 and p < 1.0:
        return ">99 %"
    if p < 0.01 and p > 0.0:
        return "<1 %"
    return f"{100.0 * p:.0f} %"


# --------------------------------------------------------------------------- one report


@dataclass
class AxisUnits:
    key: str
    units: Units
    in_composite: bool


BOUND_METHOD: Final[str] = "every unit agrees: exact binomial bound on unseen disagreement"


def unanimous(units: Units, point: Replicates, boot: Replicates) -> bool:
    """Every unit sits at the score's edge (all prompts full matches, no cell degraded, ...):
    the bootstrap sees no spread, yet the units not scored could disagree."""
    p = float(point.value[0])
    return (units.n > 0 and float(point.se()[0]) == 0.0 and bool(np.all(boot.value == p))
            and (p >= 100.0 or p <= 0.0))


def bound_replicates(units: Units, point: float, replicates: int, seed: int,
                     key: str) -> Replicates:
    """Replicates of a unanimous score from the exact binomial confidence distribution of the
    share f of disagreeing units (P(f > t) = (1 − t)^n), each disagreeing unit taken at the far
    edge (a conservative magnitude): what the composite's replicates use for this axis."""
    u = _rng(seed, key + "/bound").random(replicates)
    f = 1.0 - u ** (1.0 / units.n)
    return Replicates(100.0 * (1.0 - f) if point >= 100.0 else 100.0 * f, {})


def analyze(axes: Sequence[AxisUnits], *, replicates: int = DEFAULT_REPLICATES,
            seed: int = DEFAULT_SEED, level: float = DEFAULT_LEVEL,
            fixed: Mapping[str, float] | None = None,
            exact_ok: bool = False) -> dict[str, Any]:
    """The ``uncertainty`` block of a report: every axis's and the composite's estimate.

    ``fixed`` are composite axes without per-unit data: held at their score in every
    replicate (named in the block). An axis whose units all agree at its edge is exact only
    with ``exact_ok`` (the reference scored against itself: the same computation); otherwise
    it gets the exact binomial bound on disagreement among units it did not see (30 full
    matches out of 30 prompts: Trajectory ≥ 88.4 at 97.5 %), and so does the composite.
    """
    per_axis: dict[str, dict[str, Any]] = {}
    comp_point: list[Replicates] = []
    comp_boot: list[Replicates] = []
    bounded: list[str] = []
    for a in axes:
        u = a.units
        idx = draw(u.n, replicates, seed, a.key)
        pt = u.replicates(np.arange(u.n)[None, :]).keyed(a.key)
        bt = u.replicates(idx).keyed(a.key)
        if not exact_ok and unanimous(u, pt, bt):
            p = float(pt.value[0])
            est = Estimate(p, 0.0, BOUND_METHOD, level, bound_n=u.n)
            bt = bound_replicates(u, p, replicates, seed, a.key)
            if a.in_composite:
                bounded.append(a.key)
        else:
            est = estimate(pt, bt, level=level)
        per_axis[a.key] = {"unit": u.unit, "n_units": u.n, **est.to_dict()}
        if a.in_composite:
            comp_point.append(pt)
            comp_boot.append(bt)
    held = dict(fixed or {})
    for value in held.values():
        comp_point.append(Replicates(np.array([float(value)]), {}))
        comp_boot.append(Replicates(np.full(replicates, float(value)), {}))
    out: dict[str, Any] = {
        "method": METHOD,
        "method_version": METHOD_VERSION,
        "description": METHOD_TEXT,
        "replicates": replicates,
        "seed": seed,
        "level": level,
        "axes": per_axis,
        "composite": None,
        "held_fixed": sorted(held),
    }
    if comp_point:
        # an axis drawn from its binomial bound is no bootstrap replicate: BCa's bias
        # correction would read its spread below the point as bias and remove it
        why = (f"{', '.join(bounded)}: every unit agrees, drawn from its bound"
               if bounded else None)
        est = estimate(harmonic(comp_point), harmonic(comp_boot), level=level, percentile=why)
        comp = est.to_dict()
        comp["decided"] = decided_band(comp["band_probabilities"], level)
        out["composite"] = comp
    return out


def paired_difference(a: Mapping[str, Units], b: Mapping[str, Units], *,
                      composite_keys: Sequence[str] = (), replicates: int = DEFAULT_REPLICATES,
                      seed: int = DEFAULT_SEED, level: float = DEFAULT_LEVEL
                      ) -> dict[str, Any]:
    """a − b per axis and for the composite of ``composite_keys``, paired unit by unit.

    Both sides must hold the same units (ids) per axis: the same inputs. Raises ValueError
    naming the first axis whose units differ.
    """
    out: dict[str, Any] = {}
    pa: dict[str, tuple[Replicates, Replicates]] = {}
    pb: dict[str, tuple[Replicates, Replicates]] = {}
    for key in a:
        if key not in b:
            continue
        ua, ub = a[key], b[key]
        if ua.ids != ub.ids:
            raise ValueError(f"{key}: the two reports scored different units; no paired "
                             "difference")
        idx = draw(ua.n, replicates, seed, key)
        full = np.arange(ua.n)[None, :]
        pa[key] = (ua.replicates(full).keyed(key), ua.replicates(idx).keyed(key))
        pb[key] = (ub.replicates(full).keyed(key), ub.replicates(idx).keyed(key))
        est = estimate(difference(pa[key][0], pb[key][0]),
                       difference(pa[key][1], pb[key][1]), lo=-100.0, hi=100.0, level=level)
        out[key] = {"unit": ua.unit, "n_units": ua.n, **est.to_dict(bands=False),
                    "p_a_below_b": est.prob_below(0.0)}
    keys = [k for k in composite_keys if k in pa]
    if keys and len(keys) == len(composite_keys):
        ha = [pa[k] for k in keys]
        hb = [pb[k] for k in keys]
        est = estimate(difference(harmonic([x[0] for x in ha]), harmonic([x[0] for x in hb])),
                       difference(harmonic([x[1] for x in ha]), harmonic([x[1] for x in hb])),
                       lo=-100.0, hi=100.0, level=level)
        out["composite"] = {**est.to_dict(bands=False), "p_a_below_b": est.prob_below(0.0)}
    return out


def halving_coverage(parts: Sequence[tuple[str, Units]], full: float, halvings: int,
                     seed: int = 0) -> float:
    """Share of random halvings of every axis's units whose 95 % composite interval covers
    ``full`` (the whole run's composite): a check of the intervals on real data."""
    rng = np.random.default_rng(seed)
    hits = 0
    for i in range(halvings):
        half = [AxisUnits(k, u.subset(sorted(rng.choice(u.n, math.ceil(u.n / 2),
                                                        replace=False))), True)
                for k, u in parts]
        lo, hi = analyze(half, seed=i)["composite"]["ci95"]
        hits += lo <= full <= hi
    return hits / halvings


# --------------------------------------------------------------------------- decided runs


def spent(t: float, alpha: float) -> float:
    """Lan–DeMets Pocock-type α spent by information fraction ``t``."""
    t = min(1.0, max(0.0, t))
    return alpha * math.log1p((math.e - 1.0) * t)


def spent_obf(t: float, alpha: float) -> float:
    """Lan–DeMets O'Brien–Fleming-type α spent by information fraction ``t``
    (``2 − 2Φ(z_{1−α/2} / √t)``): almost nothing at an early look, nearly all of α at the full
    budget. The sweep's first round (:mod:`refract.sweep.decide`) drops a config on it, so a
    drop that the full budget would not confirm is rare."""
    t = min(1.0, max(0.0, t))
    if t <= 0.0:
        return 0.0
    return min(alpha, 2.0 - 2.0 * _cdf(_inv(1.0 - alpha / 2.0) / math.sqrt(t)))


def look_alphas(fractions: Sequence[float], alpha: float) -> list[float]:
    """The α each planned look may spend (they sum to α at the full budget)."""
    out: list[float] = []
    before = 0.0
    for t in fractions:
        now = spent(t, alpha)
        out.append(now - before)
        before = now
    return out


def look_fractions(looks: int) -> list[float]:
    return [(k + 1) / looks for k in range(looks)]


__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_LOOKS",
    "DEFAULT_REPLICATES",
    "DEFAULT_SEED",
    "METHOD",
    "MIN_DECISION_UNITS",
    "SEQUENTIAL_METHOD",
    "BOUND_METHOD",
    "AxisUnits",
    "Estimate",
    "Replicates",
    "Units",
    "analyze",
    "band_phrase",
    "decided_band",
    "difference",
    "draw",
    "estimate",
    "halving_coverage",
    "harmonic",
    "look_alphas",
    "look_fractions",
    "paired_difference",
    "spent",
    "spent_obf",
]
