"""Issue 26: never die on an illegal instruction.

* cmake/RefractAmx.cmake decides at configure time whether ggml's AMX kernels go in, from what
  the compiler emits for ggml's tile configuration (GCC 12 drops the stores: every AMX matmul
  would raise SIGILL). The check is compile-only, so it runs on every x86 machine: the target
  is played with ``-march=sapphirerapids``.
* refract/probe.py runs one real matmul per CPU buffer type through the linked ggml in a child
  process (``refract selftest``; and before ``refract._core`` loads in an AMX build), turning a
  SIGILL into a one-line diagnosis.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import needs_core, on_ci
from refract.system import cpuinfo, probe

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "cmake" / "RefractAmx.cmake"
X86 = platform.machine().lower() in ("x86_64", "amd64")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        msg = f"{name} is not on PATH"
        if on_ci():
            pytest.fail(f"CI: {msg}", pytrace=False)
        pytest.skip(msg)
    return path


def _gcc_major(cxx: str) -> int | None:
    out = subprocess.run([cxx, "-dumpversion"], capture_output=True, text=True, check=False)
    m = re.match(r"(\d+)", out.stdout.strip())
    return int(m.group(1)) if m else None


def _decide(cxx: str, *extra: str) -> tuple[int, dict[str, str], str]:
    proc = subprocess.run(
        [_tool("cmake"), f"-DREFRACT_CXX={cxx}", *extra, "-P", str(SCRIPT)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    out = proc.stdout + proc.stderr
    fields = dict(
        line.split("=", 1) for line in out.splitlines() if re.match(r"^[a-z_]+=", line)
    )
    return proc.returncode, fields, out


pytestmark = pytest.mark.skipif(not X86, reason="AMX is x86_64 only")


def test_configure_check_rejects_gcc12_tile_config() -> None:
    """On an AMX target (played by -march=sapphirerapids), GCC 12 fails the check and AMX stays
    out; the same script with the machine's own target says whether this CPU has AMX."""
    gxx = _tool("g++")
    major = _gcc_major(gxx)
    rc, fields, out = _decide(gxx, "-DREFRACT_AMX_TARGET_FLAGS=-march=sapphirerapids")
    assert rc == 0, out
    assert fields["target_has_amx"] == "TRUE"
    assert fields["compiler_check"] in ("ok", "miscompiles"), out
    if major == 12:  # Debian 12's compiler: the miscompile the issue found
        assert fields["compiler_check"] == "miscompiles"
        assert fields["enabled"] == "FALSE"
        assert "AVX-512 included" in fields["reason"]
    # the verdict follows the assembly: the probe's external arrays are read iff it is ok
    asm = subprocess.run(
        [gxx, "-x", "c++", "-std=c++17", "-O2", "-mamx-tile", "-S", "-o", "-",
         str(ROOT / "cmake" / "amx_tilecfg_probe.cpp")],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "ldtilecfg" in asm
    reads_config = "refract_amx_probe_rows" in asm and "refract_amx_probe_colsb" in asm
    assert reads_config == (fields["compiler_check"] == "ok")
    # a target without AMX never gets it, whatever the compiler
    rc, fields, out = _decide(gxx, "-DREFRACT_AMX_TARGET_FLAGS=-march=x86-64-v3")
    assert rc == 0 and fields["target_has_amx"] == "FALSE" and fields["enabled"] == "FALSE", out


def test_configure_check_refuses_required_amx_on_a_bad_compiler() -> None:
    gxx = _tool("g++")
    if _gcc_major(gxx) != 12:
        pytest.skip("needs GCC 12, the compiler known to miscompile ggml's tile config")
    rc, _, out = _decide(gxx, "-DREFRACT_AMX_TARGET_FLAGS=-march=sapphirerapids",
                         "-DREFRACT_AMX=ON")
    assert rc != 0
    assert "REFRACT_AMX=ON" in out and "miscompiles" in out
    rc, fields, out = _decide(gxx, "-DREFRACT_AMX_TARGET_FLAGS=-march=sapphirerapids",
                              "-DREFRACT_AMX=OFF")
    assert rc == 0 and fields["enabled"] == "FALSE" and "REFRACT_AMX=OFF" in fields["reason"]


def test_configure_check_passes_clang() -> None:
    """Clang emits every store of the tile configuration: the check passes. (Clang before 16
    names its AMX macros __AMXINT8__, not ggml's __AMX_INT8__: ggml then builds no AMX at
    all, and the script says the target has none.)"""
    clangs = [c for c in ("clang++", *(f"clang++-{v}" for v in range(14, 21))) if shutil.which(c)]
    if not clangs:
        pytest.skip("no clang++ is installed (optional: only GCC's verdict is required)")
    for clang in clangs:
        rc, fields, out = _decide(clang, "-DREFRACT_AMX_TARGET_FLAGS=-march=sapphirerapids")
        assert rc == 0, out
        assert fields["compiler_check"] == "ok", out
        assert fields["enabled"] == fields["target_has_amx"], out


def test_build_records_its_amx_decision() -> None:
    """The installed build says what it decided; on a CPU that lists AMX it is off or probed,
    never blindly on."""
    build = probe.build_config()
    if build is None:
        pytest.skip("refract._core is not built")
    status = probe.amx_status(build)
    assert status["compiler_check"] in ("ok", "miscompiles", "unsupported"), status
    assert status["reason"] and status["reason"] != "not recorded"
    if status["enabled"]:
        assert status["compiler_check"] == "ok" and status["target_has_amx"]
    if str(status["compiler"]).startswith("GNU 12."):
        assert status["compiler_check"] == "miscompiles"
        assert not status["enabled"]
    flags = cpuinfo.cpu_flags() or set()
    if "amx_tile" in flags and status["enabled"]:
        # on: proved by the start-up probe in this very process's import
        import refract._core  # noqa: F401

        assert str(probe.amx_status(build)["startup_probe"]).startswith("passed")
    if getattr(build, "PORTABLE", False):
        assert not status["enabled"] and "portable" in status["reason"]


@needs_core
def test_matmul_probe_runs_every_cpu_buffer_type() -> None:
    result = probe.run_matmul_probe()
    assert result.ok, result.message
    assert result.buffer_types[0] == "CPU"
    cpu = {c["weight_type"]: c for c in result.cases["CPU"]}
    for wt in ("q4_0", "q8_0", "q4_K", "q6_K", "f16"):
        assert cpu[wt]["supported"] and cpu[wt]["finite"], cpu[wt]
        # activations are quantized inside ggml: small but non-zero error, far below tolerance
        assert 0.0 < cpu[wt]["max_rel_err"] < probe.TOLERANCE / 5
    import refract._core as core

    assert result.buffer_types == list(core.cpu_buffer_types())


def test_probe_judges_a_wrong_matmul(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel that computes a wrong product is a failed probe, not a pass."""
    lines = [
        json.dumps({"start": "CPU"}),
        json.dumps({"buffer_type": "CPU", "cases": [
            {"weight_type": "q4_K", "supported": True, "max_rel_err": 0.9, "finite": True}]}),
    ]
    fake = subprocess.CompletedProcess([], 0, "\n".join(lines) + "\n", "")
    monkeypatch.setattr(probe.subprocess, "run", lambda *a, **k: fake)
    result = probe.run_matmul_probe()
    assert not result.ok and "q4_K" in result.message and "0.9" in result.message
    fake_nan = subprocess.CompletedProcess([], 0, lines[0] + "\n" + json.dumps(
        {"buffer_type": "CPU", "cases": [{"weight_type": "q8_0", "supported": True,
                                          "max_rel_err": 0.001, "finite": False}]}) + "\n", "")
    monkeypatch.setattr(probe.subprocess, "run", lambda *a, **k: fake_nan)
    assert not probe.run_matmul_probe().ok


@needs_core
def test_selftest_turns_sigill_into_one_line(tmp_path: Path) -> None:
    """The child dies with SIGILL in the AMX buffer type: selftest says which instruction set
    and which CMake switch avoids it, exits non-zero, and runs no model work in-process."""
    env = {**os.environ, probe.CRASH_ENV: "SIGILL:AMX"}
    proc = subprocess.run([sys.executable, "-m", "refract", "selftest"], env=env,
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr + proc.stdout
    [line] = [ln for ln in proc.stdout.splitlines() if ln.startswith("[FAIL]")]
    assert "buffer type AMX died with SIGILL (illegal instruction)" in line
    assert "-DREFRACT_AMX=OFF" in line
    # a crash in the plain CPU kernels names the instruction set and the portable switch
    env[probe.CRASH_ENV] = "SIGILL:CPU"
    proc = subprocess.run([sys.executable, "-m", "refract", "selftest"], env=env,
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    [line] = [ln for ln in proc.stdout.splitlines() if ln.startswith("[FAIL]")]
    build = probe.build_config()
    if build is not None and getattr(build, "PORTABLE", False):  # a wheel: x86-64-v3
        assert "x86-64-v3" in line and "-DREFRACT_PORTABLE=OFF" in line, line
    else:  # a native build: -march=native of the machine it was built on
        assert "-march=native" in line and "-DREFRACT_PORTABLE=ON" in line, line
    assert proc.returncode == 2
    # and the healthy run passes with the decision shown
    env.pop(probe.CRASH_ENV)
    proc = subprocess.run([sys.executable, "-m", "refract", "selftest"], env=env,
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[ok  ] AMX decision: " in proc.stdout
    assert "[ok  ] ggml matrix multiply" in proc.stdout


_FAKE_AMX_BUILD = textwrap.dedent(
    """
    import sys, types, importlib
    real = importlib.import_module("refract._build_config")
    fake = types.ModuleType("refract._build_config")
    fake.__dict__.update({k: v for k, v in vars(real).items() if not k.startswith("__")})
    fake.__spec__ = real.__spec__
    fake.AMX_ENABLED, fake.AMX_TARGET, fake.AMX_COMPILER_CHECK = True, True, "ok"
    fake.AMX_REASON = "played by the test: AMX in"
    sys.modules["refract._build_config"] = fake
    """
)


@needs_core
def test_amx_build_proves_itself_before_the_engine_loads(tmp_path: Path) -> None:
    """An AMX build runs the probe in a child before ``refract._core`` loads: a crash there
    refuses the import (and the CLI) with one line; a pass is cached per machine and build."""
    env = {**os.environ, "REFRACT_CACHE_DIR": str(tmp_path / "cache"),
           probe.CRASH_ENV: "SIGILL:AMX"}
    env.pop(probe.SKIP_ENV, None)
    code = _FAKE_AMX_BUILD + "import refract._core\n"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 1
    assert "ImportError: ggml's matrix multiply in buffer type AMX died with SIGILL" in proc.stderr
    cli = _FAKE_AMX_BUILD + (
        "from refract.cli import main\nsys.argv = ['refract', 'selftest']\nmain()\n"
    )
    proc = subprocess.run([sys.executable, "-c", cli], env=env, capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    err_lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(err_lines) == 1 and "SIGILL" in err_lines[0] and "-DREFRACT_AMX=OFF" in err_lines[0]
    assert not list((tmp_path / "cache").glob("probe/*.json")), "a failed probe was cached"

    env.pop(probe.CRASH_ENV)
    show = code + ("from refract.system.probe import amx_status\n"
                   "print(amx_status()['startup_probe'])\n")
    first = subprocess.run([sys.executable, "-c", show], env=env, capture_output=True,
                           text=True, cwd=tmp_path, timeout=300)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("passed: CPU (")
    assert len(list((tmp_path / "cache").glob("probe/amx-*.json"))) == 1
    again = subprocess.run([sys.executable, "-c", show], env=env, capture_output=True,
                           text=True, cwd=tmp_path, timeout=300)
    assert again.returncode == 0 and again.stdout.startswith("passed on this machine and build")
