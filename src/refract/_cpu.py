"""Refuse politely, before ``refract._core`` is loaded, on a CPU the binary cannot run on.

Portable builds (release wheels, ``-DREFRACT_PORTABLE=ON``) of x86_64 need the x86-64-v3
instruction set (AVX, AVX2, FMA, F16C, BMI2). Loading such a binary on an older CPU would
die with SIGILL (illegal instruction) somewhere inside ggml, with no message. The build
writes what it needs into ``refract/_build_config.py``; :func:`install_guard` (called by
``refract/__init__.py``) puts a finder in front of ``import refract._core`` that compares
it with the CPU's flags and raises :class:`ImportError` with a one-line explanation
instead. Local builds (``-march=native``) record no baseline and are not checked; a build with
ggml's AMX kernels in has them proved by a matmul in a child process first (refract/probe.py).
``REFRACT_SKIP_CPU_CHECK=1`` disables the check; ``REFRACT_CPUINFO`` reads the flags from
another file than ``/proc/cpuinfo`` (tests use it to play an older CPU).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import platform
import sys
from collections.abc import Sequence
from types import ModuleType

from refract.system.cpuinfo import cpu_flags, missing_features

CORE = "refract._core"
SKIP_ENV = "REFRACT_SKIP_CPU_CHECK"


def unsupported_reason(
    build: ModuleType | None = None, flags: set[str] | None = None
) -> str | None:
    """Why this CPU cannot run this build of refract._core, or None if it can (or unknown)."""
    if os.environ.get(SKIP_ENV, "").strip() not in ("", "0"):
        return None
    if build is None:
        try:
            build = importlib.import_module("refract._build_config")
        except ImportError:  # a source tree without a build: nothing recorded
            return None
    required = tuple(getattr(build, "X86_BASELINE", ()))
    if not required or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    missing = missing_features(required, cpu_flags() if flags is None else flags)
    if not missing:
        return None
    return (
        "this refract binary is built for x86-64-v3 CPUs (AVX2, FMA, F16C, BMI2) and this "
        f"CPU lacks {', '.join(missing)}; build refract from source for this machine: "
        "pip install --no-binary refract refract"
    )


class _Guard(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == CORE:
            reason = unsupported_reason()
            if reason is not None:
                raise ImportError(reason, name=CORE)
            from refract.system.probe import amx_startup_check

            reason = amx_startup_check()  # AMX builds only: proved in a child, once per machine
            if reason is not None:
                raise ImportError(reason, name=CORE)
            from refract.system.threads import apply_wait_policy

            apply_wait_policy()  # the OpenMP runtime reads it once, as the extension loads
        return None  # let the normal finders load it


def install_guard() -> None:
    """Check the CPU on every ``import refract._core`` (idempotent)."""
    if not any(isinstance(f, _Guard) for f in sys.meta_path):
        sys.meta_path.insert(0, _Guard())
