"""The memory/quality Pareto frontier of KV configs (the sweep's plot and recommendation, the
leaderboard's per-model view).

A config is on the frontier when no other config is both no larger (KV bytes per token) and
no worse (composite), and strictly one of the two: nothing cheaper is as good. Configs with
equal bytes and equal score are both kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["dominates", "frontier"]


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether ``a`` = (bytes, score) dominates ``b``: no larger, no worse, and not equal."""
    return a[0] <= b[0] and a[1] >= b[1] and (a[0] < b[0] or a[1] > b[1])


def frontier(points: Sequence[tuple[str, float, float]]) -> list[str]:
    """The labels of ``(label, bytes, score)`` points on the frontier, smallest first.

    Points whose bytes or score are not finite numbers are left out (never on a frontier).
    """
    ok = [(lab, float(b), float(s)) for lab, b, s in points
          if b is not None and s is not None and math.isfinite(b) and math.isfinite(s)]
    keep = [p for p in ok if not any(dominates((q[1], q[2]), (p[1], p[2])) for q in ok)]
    keep.sort(key=lambda p: (p[1], -p[2], p[0]))
    return [p[0] for p in keep]
