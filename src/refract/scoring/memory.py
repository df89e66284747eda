"""The memory plan of a score: each axis's peak context bytes (contexts are freed between
axes), checked against what the machine has before any axis runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from refract.axes import registry
from refract.system.memory import check_fits

if TYPE_CHECKING:
    from refract.engine.facade import Engine
    from refract.scoring.plan import ScorePlan

__all__ = ["check_memory", "memory_plan"]


def memory_plan(engine: Engine, plan: ScorePlan) -> dict[str, int]:
    """Bytes each axis's contexts need at their peak (:meth:`~refract.axes.base.Axis.memory`);
    the axes of ``--measure-floor``'s ref-vs-ref run count when it runs them."""
    opts = plan.options
    need: dict[str, int] = {}
    for axis in registry:
        if axis.enabled(opts) or (axis.in_floor and opts.measure_floor):
            got = axis.memory(engine, plan)
            if got is not None:
                need[axis.key] = got
    return need


def check_memory(engine: Engine, plan: ScorePlan) -> None:
    """Refuse, before any axis runs, a plan whose contexts would not fit in memory."""
    need = memory_plan(engine, plan)
    if not need:
        return
    key, peak = max(need.items(), key=lambda kv: kv[1])
    axis = registry.get(key)
    what = (f"the {axis.title if axis is not None else key} axis with "
            f"{len(plan.candidates)} candidate(s) "
            f"(ctx {plan.options.ctx}, KV {plan.reference.label} + candidates)")
    check_fits(peak, what)
