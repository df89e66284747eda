"""Reports: assembly (``build``), JSON I/O (``io``), terminal card (``text``), HTML
(``html``), multi-report tables (``compare``, ``leaderboard``)."""

from __future__ import annotations

from refract.report.build import SCHEMA, build_report
from refract.report.io import ReportError, dumps_report, load_report, write_report

__all__ = ["SCHEMA", "ReportError", "build_report", "dumps_report", "load_report", "write_report"]
