"""Prove ggml's matrix multiply in a child process, so a kernel this CPU cannot run is a
one-line diagnosis, never a dead user process (issue 26).

``python -m refract.system.probe`` (the child) runs one real ``MUL_MAT`` through the linked ggml for
each CPU weight buffer type (the plain CPU layout, the repacked one, AMX where compiled in) and
weight type, checked against a double-precision reference, printing one JSON line per step.
:func:`run_matmul_probe` (the parent) starts it, reads those lines and turns a signal (SIGILL:
an instruction this CPU lacks) into a diagnosis naming the instruction set and the CMake switch
that avoids it.

Two callers:

* ``refract selftest`` always runs it before reporting ``[ok]``;
* a build with ggml's AMX kernels in (``_build_config.AMX_ENABLED``, decided at configure time
  by ``cmake/RefractAmx.cmake``) runs it once per machine and build, before
  ``refract._core`` loads in the user's process (:func:`amx_startup_check`, called by
  ``refract/_cpu.py``); the verdict is cached under ``<cache>/probe/`` and a failure refuses
  the import with a one-line ``ImportError``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "ProbeResult",
    "amx_status",
    "amx_startup_check",
    "build_config",
    "run_matmul_probe",
]

CHILD_ENV = "REFRACT_PROBE_CHILD"
"""Set in the child: its own ``import refract._core`` must not start another probe."""
SKIP_ENV = "REFRACT_SKIP_AMX_PROBE"
"""``1`` skips the start-up probe of AMX builds (the selftest probe still runs)."""
CRASH_ENV = "REFRACT_PROBE_CRASH_AT"
"""Tests only: the child kills itself with this signal (e.g. ``SIGILL:AMX``) when it reaches
that buffer type, so the parent's diagnosis is tested on machines without the faulty CPU."""
TOLERANCE = 0.05
"""Largest relative error accepted (activations are quantized to 8 bits inside ggml: ~0.4 %)."""
TIMEOUT_S = 300.0

_startup_verdict = "not run in this process"


@dataclass
class ProbeResult:
    """What the child proved: per buffer type, per weight type, the relative error."""

    ok: bool
    buffer_types: list[str] = field(default_factory=list)
    cases: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    message: str = ""
    seconds: float = 0.0

    def summary(self) -> str:
        """``CPU (q4_0 q8_0 …), CPU_REPACK (q4_0 q4_K): max rel. error 0.39 %``."""
        parts, worst = [], 0.0
        for buft in self.buffer_types:
            ran = [c for c in self.cases.get(buft, []) if c.get("supported")]
            worst = max([worst] + [float(c.get("max_rel_err", 0.0)) for c in ran])
            parts.append(f"{buft} ({' '.join(str(c['weight_type']) for c in ran) or 'none'})")
        return f"{', '.join(parts)}: max relative error {100 * worst:.2f} %"


def build_config() -> ModuleType | None:
    """``refract._build_config`` (what this build decided), or None in a source tree."""
    import importlib

    try:
        return importlib.import_module("refract._build_config")
    except ImportError:
        return None


def amx_status(build: ModuleType | None = None) -> dict[str, Any]:
    """The configure-time AMX decision of this build, as reports and ``selftest`` show it."""
    build = build if build is not None else build_config()
    if build is None:
        return {"enabled": None, "reason": "no build configuration recorded"}
    return {
        "enabled": bool(getattr(build, "AMX_ENABLED", False)),
        "target_has_amx": bool(getattr(build, "AMX_TARGET", False)),
        "compiler": str(getattr(build, "CXX_COMPILER", "unknown")),
        "compiler_check": str(getattr(build, "AMX_COMPILER_CHECK", "not recorded")),
        "reason": str(getattr(build, "AMX_REASON", "not recorded")),
        "startup_probe": _startup_verdict
        if getattr(build, "AMX_ENABLED", False) else "not needed: AMX is not compiled in",
    }


def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def _diagnosis(buft: str | None, sig: str, build: ModuleType | None) -> str:
    where = f"in buffer type {buft}" if buft else "before its first buffer type"
    head = f"ggml's matrix multiply {where} died with {sig}"
    if sig != "SIGILL":
        return f"{head} in a child process; this build of refract cannot compute on this machine"
    portable = bool(getattr(build, "PORTABLE", False)) if build is not None else False
    if buft == "AMX":
        compiler = getattr(build, "CXX_COMPILER", "its compiler") if build else "its compiler"
        return (
            f"{head} (illegal instruction): ggml's AMX kernels (built with {compiler}) cannot run "
            "here; rebuild without them: CMAKE_ARGS=-DREFRACT_AMX=OFF pip install "
            "--force-reinstall --no-binary refract refract"
        )
    if portable:
        return (
            f"{head} (illegal instruction): this CPU lacks the x86-64-v3 instruction set "
            "(AVX2, FMA, F16C, BMI2) this portable build needs; build from source for this "
            "machine (-DREFRACT_PORTABLE=OFF, a source build's default): "
            "pip install --no-binary refract refract"
        )
    return (
        f"{head} (illegal instruction): this build targets another CPU's instruction set "
        "(-march=native where it was built); rebuild here, or portable: "
        "CMAKE_ARGS=-DREFRACT_PORTABLE=ON pip install --force-reinstall --no-binary refract refract"
    )


def run_matmul_probe(timeout: float = TIMEOUT_S, n_threads: int = 2) -> ProbeResult:
    """Run the probe in a child process and judge what it printed (never raises for a crash)."""
    env = dict(os.environ)
    env[CHILD_ENV] = "1"
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "refract.system.probe", str(n_threads)],
            capture_output=True, text=True, timeout=timeout, env=env, check=False,
        )
    except subprocess.TimeoutExpired:
        return ProbeResult(False, message=f"the matmul probe did not finish in {timeout:.0f} s",
                           seconds=time.perf_counter() - t0)
    except OSError as exc:
        return ProbeResult(False, message=f"cannot start the matmul probe: {exc}",
                           seconds=time.perf_counter() - t0)
    result = ProbeResult(True, seconds=time.perf_counter() - t0)
    current: str | None = None
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if not isinstance(msg, dict):
            continue
        if "start" in msg:
            current = str(msg["start"])
        elif "buffer_type" in msg:
            buft = str(msg["buffer_type"])
            result.buffer_types.append(buft)
            result.cases[buft] = list(msg.get("cases") or [])
            current = None
    build = build_config()
    if proc.returncode < 0:
        result.ok = False
        result.message = _diagnosis(current, _signal_name(proc.returncode), build)
        return result
    if proc.returncode != 0:
        tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        result.ok = False
        result.message = (
            f"the matmul probe failed (exit {proc.returncode}): "
            f"{tail[-1] if tail else 'no message'}"
        )
        return result
    if not result.buffer_types:
        result.ok = False
        result.message = "the matmul probe reported no buffer type"
        return result
    for buft in result.buffer_types:
        for case in result.cases[buft]:
            if not case.get("supported"):
                continue
            err = float(case.get("max_rel_err", float("nan")))
            if not case.get("finite", False) or not err <= TOLERANCE:
                result.ok = False
                result.message = (
                    f"ggml's matrix multiply in buffer type {buft} with {case['weight_type']} "
                    f"weights is wrong: relative error {err:.3g} (> {TOLERANCE:g}) against a "
                    "double-precision reference"
                )
                return result
    return result


# ----------------------------------------------------------------- start-up check of AMX builds


def _machine_build_key(build: ModuleType) -> str:
    """One key per machine (CPU model and flags) and build (the extension file's identity)."""
    from refract.system.cpuinfo import cpu_flags

    h = hashlib.sha256()
    flags = cpu_flags() or set()
    h.update(" ".join(sorted(flags)).encode())
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.partition(":")[0].strip() in ("model name", "microcode"):
                h.update(line.encode())
                break
    except OSError:
        pass
    import importlib.util

    spec = importlib.util.find_spec("refract._build_config")
    origin = Path(spec.origin) if spec is not None and spec.origin else None
    if origin is not None:
        for so in sorted(origin.parent.glob("_core*")):
            st = so.stat()
            h.update(f"{so.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(str(getattr(build, "AMX_REASON", "")).encode())
    return h.hexdigest()[:32]


def _cache_file(key: str) -> Path:
    from refract.defaults import default_cache_dir

    return default_cache_dir() / "probe" / f"amx-{key}.json"


def amx_startup_check() -> str | None:
    """For a build with AMX in: prove it once per machine and build; the reason to refuse
    ``import refract._core`` when it fails, else None. Builds without AMX return None at once."""
    global _startup_verdict
    if os.environ.get(CHILD_ENV):
        return None
    build = build_config()
    if build is None or not getattr(build, "AMX_ENABLED", False):
        return None
    if os.environ.get(SKIP_ENV, "").strip() not in ("", "0"):
        _startup_verdict = f"skipped ({SKIP_ENV}=1)"
        return None
    key = _machine_build_key(build)
    cached = _cache_file(key)
    try:
        verdict = json.loads(cached.read_text())
        if isinstance(verdict, dict) and verdict.get("key") == key and verdict.get("ok") is True:
            _startup_verdict = f"passed on this machine and build (cached: {cached})"
            return None
    except (OSError, ValueError):
        pass
    result = run_matmul_probe()
    if not result.ok:
        _startup_verdict = f"failed: {result.message}"
        return f"{result.message} (start-up probe of this AMX build; {SKIP_ENV}=1 skips it)"
    _startup_verdict = f"passed: {result.summary()}"
    try:
        from refract.files import atomic_write_bytes

        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cached, json.dumps(
            {"key": key, "ok": True, "summary": result.summary(), "when": time.time()}
        ).encode())
    except OSError:
        pass  # an unwritable cache only means the probe runs again next time
    return None


def _child(argv: list[str]) -> int:
    """The child: one JSON line before and after each buffer type (stdout, flushed)."""
    import refract._core as core

    n_threads = int(argv[0]) if argv else 2
    crash_sig, _, crash_at = os.environ.get(CRASH_ENV, "").partition(":")
    bufts = list(core.cpu_buffer_types())
    if crash_sig and crash_at not in bufts:
        bufts.append(crash_at)  # a buffer type this machine lacks (AMX), to test the diagnosis
    for buft in bufts:
        print(json.dumps({"start": buft}), flush=True)
        if crash_sig and buft == crash_at:
            os.kill(os.getpid(), signal.Signals[crash_sig])
        cases = core.matmul_probe(buft, n_threads)
        print(json.dumps({"buffer_type": buft, "cases": cases}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
