"""The axes refract scores: one file each, one registry line each.

To add an axis: write ``refract/axes/<name>.py`` with a subclass of
:class:`refract.axes.base.Axis` (its options, plan checks, memory need, run, report pieces and
views: see that module) and add it to :data:`registry` below. The plan, the run, the composite,
the report, its comparability fingerprint, the terminal card and the HTML page all ask the
registry; none names an axis.
"""

from __future__ import annotations

from refract.axes.base import Axis, AxisResult, PromptJob, Registry, RunContext
from refract.axes.kld import KLDAxis
from refract.axes.plad import PladAxis
from refract.axes.rniah import RniahAxis
from refract.axes.trajectory import TrajectoryAxis

#: every axis, in report order (SPEC: A, B, C, D)
registry = Registry([
    TrajectoryAxis(),
    KLDAxis(),
    RniahAxis(),
    PladAxis(),
])

__all__ = ["Axis", "AxisResult", "PromptJob", "Registry", "RunContext", "registry"]
