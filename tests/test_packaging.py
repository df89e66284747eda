"""Packaging: licences, the sdist and wheel CI builds, the CPU guard, the cibuildwheel setup.

The artifact tests read the files that ``.ci/run`` builds, named by environment variables:
``REFRACT_SDIST`` (the sdist), ``REFRACT_WHEEL`` (the repaired Linux wheel) and
``REFRACT_EXPECT_WHEEL_INSTALLED=1`` (the refract under test is that wheel, installed in a
clean venv). Without them (a developer's editable install) those tests skip; on CI
(CI=true) a missing variable is a failure, so CI cannot pass without checking its artifacts.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tarfile
import types
import zipfile
from pathlib import Path

import pytest

from conftest import on_ci
from refract import _cpu
from refract.system import cpuinfo

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11 (CI's); 3.10 skips the config checks
ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
DATA_FILES = (
    "data/README.md",
    "data/bundled-corpus.json",
    "data/austen-pride-and-prejudice.txt.xz",
    "data/austen-persuasion.txt.xz",
)


def _artifact(env: str) -> Path:
    value = os.environ.get(env, "").strip()
    if not value:
        msg = f"{env} is not set (.ci/run sets it to the artifact it built)"
        if on_ci():
            pytest.fail(f"CI: {msg}", pytrace=False)
        pytest.skip(msg)
    p = Path(value)
    assert p.is_file(), f"{env}={p} does not exist"
    return p


def _fetch_llama_pins() -> dict[str, dict[str, str]]:
    spec = {}
    exec((ROOT / "tools" / "fetch_llama.py").read_text(encoding="utf-8"), spec)  # noqa: S102
    return {**spec["PINS"], **spec["FORK_PINS"]}


# --- licences ------------------------------------------------------------------------------


def test_licence_files_and_metadata() -> None:
    lic = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert lic.startswith("MIT License") and "Permission is hereby granted" in lic
    project = PYPROJECT["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE", "THIRD_PARTY_NOTICES.md"]
    notices = (ROOT / "THIRD_PARTY_NOTICES.md").read_text(encoding="utf-8")
    for needle in ("llama.cpp", "ggml", "nanobind", "BSD-3-Clause", "robin_map",
                   "Jane Austen", "public domain", "The ggml authors", "Wenzel Jakob"):
        assert needle in notices, needle


# --- the sdist -----------------------------------------------------------------------------


def test_sdist_settings() -> None:
    skb = PYPROJECT["tool"]["scikit-build"]
    assert "vendor/llama.cpp" in skb["sdist"]["include"]
    assert "vendor/llama.cpp" not in skb["sdist"].get("exclude", [])


def test_sdist_is_self_contained() -> None:
    sdist = _artifact("REFRACT_SDIST")
    with tarfile.open(sdist, "r:gz") as tar:
        names = tar.getnames()
        top = names[0].split("/")[0]
        rel = {n[len(top) + 1:] for n in names}
        tree = "vendor/llama.cpp-turboquant"
        stamp = json.load(tar.extractfile(f"{top}/{tree}/REFRACT_SOURCE.json"))  # type: ignore[arg-type]
        flavour = tar.extractfile(f"{top}/vendor/DEFAULT_FLAVOUR").read().decode().strip()  # type: ignore[union-attr]
    # what ships is the TurboQuant flavour: the fork's pinned, verified tree, built by default
    # from the sdist with no network (tools/make_sdist.py); no second tree rides along
    pin = _fetch_llama_pins()["turboquant"]
    assert flavour == "turboquant"
    assert stamp["flavour"] == "turboquant"
    assert stamp["llama_cpp_commit"] == pin["llama_cpp_commit"]
    assert stamp["tree_sha256"] == pin["tree_sha256"]
    assert not any(n.startswith("vendor/llama.cpp/") for n in rel)
    for f in (f"{tree}/include/llama.h", f"{tree}/CMakeLists.txt",
              f"{tree}/ggml/CMakeLists.txt", f"{tree}/LICENSE",
              "LICENSE", "THIRD_PARTY_NOTICES.md", "CMakeLists.txt", "pyproject.toml",
              "src/refract/_core.pyi", "src/refract/py.typed", "tools/fetch_llama.py",
              *(f"src/refract/{d}" for d in DATA_FILES)):
        assert f in rel, f
    assert not any(n.startswith(("build/", ".venv/", "dist/")) for n in rel)


# --- the wheel -----------------------------------------------------------------------------


def test_wheel_contents() -> None:
    wheel = _artifact("REFRACT_WHEEL")
    # a manylinux platform tag (auditwheel), never plain linux_x86_64
    tag = wheel.name.removesuffix(".whl").split("-")[-1]
    assert "manylinux" in tag, wheel.name
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        dist_info = next(n.split("/")[0] for n in names if ".dist-info/" in n)
        build_config = zf.read("refract/_build_config.py").decode()
        core_so = [n for n in names if n.startswith("refract/_core") and n.endswith(".so")]
        stub = zf.read("refract/_core.pyi").decode()
        notices = zf.read(f"{dist_info}/licenses/THIRD_PARTY_NOTICES.md").decode()
    assert len(core_so) == 1
    for f in ("refract/py.typed", *(f"refract/{d}" for d in DATA_FILES),
              f"{dist_info}/licenses/LICENSE"):
        assert f in names, f
    assert "def kld_rows(" in stub
    assert "nanobind" in notices
    # portable: no -march=native; the x86_64 baseline the CPU guard checks
    ns: dict[str, object] = {}
    exec(build_config, ns)  # noqa: S102
    assert ns["PORTABLE"] is True
    # built from the release sdist: the TurboQuant flavour, its turbo types in the extension
    core_text = zf_core_strings(wheel, core_so[0])
    assert b"turboquant" in core_text and b"turbo4" in core_text
    # never AMX in a wheel (x86-64-v3 baseline); the configure-time compiler check is recorded
    assert ns["AMX_ENABLED"] is False and "portable" in str(ns["AMX_REASON"])
    assert ns["AMX_COMPILER_CHECK"] in ("ok", "miscompiles", "unsupported", "not checked")
    if "x86_64" in tag:
        assert ns["X86_BASELINE"] == ("sse4_2", "avx", "avx2", "bmi2", "fma", "f16c")


def zf_core_strings(wheel: Path, member: str) -> bytes:
    """The extension's bytes, read out of the wheel (its flavour and type names are strings)."""
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(member)


def _expect_installed_wheel() -> None:
    if os.environ.get("REFRACT_EXPECT_WHEEL_INSTALLED", "").strip() != "1":
        msg = "REFRACT_EXPECT_WHEEL_INSTALLED is not 1 (.ci/run tests the installed wheel)"
        if on_ci():
            pytest.fail(f"CI: {msg}", pytrace=False)
        pytest.skip(msg)


def test_tests_run_against_the_installed_wheel() -> None:
    _expect_installed_wheel()
    import refract

    pkg = Path(refract.__file__).resolve().parent
    assert ROOT / "src" not in pkg.parents, f"refract imported from the source tree: {pkg}"
    assert "site-packages" in pkg.parts
    assert (pkg / "_core.pyi").is_file() and (pkg / "py.typed").is_file()
    assert all((pkg / d).is_file() for d in DATA_FILES)
    # the wheel that ships is the TurboQuant flavour (issue 20)
    from refract.engine.facade import build_info

    info = build_info()
    assert info["llama_cpp_flavour"] == "turboquant"
    assert list(info["turbo_kv_types"]) == ["turbo2", "turbo3", "turbo4"]


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86_64 only")
def test_installed_wheel_refuses_an_old_cpu_politely(tmp_path: Path) -> None:
    """A CPU without AVX2 gets a one-line ImportError, not SIGILL (a real subprocess)."""
    _expect_installed_wheel()
    old = tmp_path / "cpuinfo"
    old.write_text("processor\t: 0\nflags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt\n\n")
    env = {**os.environ, cpuinfo.CPUINFO_ENV: str(old)}
    env.pop(_cpu.SKIP_ENV, None)
    proc = subprocess.run([sys.executable, "-c", "import refract._core"], env=env,
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1, proc
    assert "ImportError: this refract binary is built for x86-64-v3 CPUs" in proc.stderr
    assert "lacks avx, avx2, bmi2, fma, f16c" in proc.stderr
    # the CLI says it in one line (no traceback)
    cli = subprocess.run([sys.executable, "-m", "refract", "selftest"], env=env,
                         capture_output=True, text=True, cwd=tmp_path)
    assert cli.returncode != 0 and "Traceback" not in cli.stderr
    assert "x86-64-v3" in cli.stderr + cli.stdout
    # this CPU (CI's) passes the same check
    ok = subprocess.run([sys.executable, "-c", "import refract._core"],
                        capture_output=True, text=True, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr


# --- the CPU guard (unit) ------------------------------------------------------------------


def test_cpu_flags_parsing(tmp_path: Path) -> None:
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nvendor_id\t: X\nflags\t\t: fpu avx avx2 fma\n\nprocessor\t: 1\n")
    assert cpuinfo.cpu_flags(f) == {"fpu", "avx", "avx2", "fma"}
    assert cpuinfo.cpu_flags(tmp_path / "absent") is None
    (tmp_path / "noflags").write_text("processor : 0\n")
    assert cpuinfo.cpu_flags(tmp_path / "noflags") is None


def test_cpu_guard_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    build = types.SimpleNamespace(PORTABLE=True, X86_BASELINE=("avx", "avx2", "fma"))
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.delenv(_cpu.SKIP_ENV, raising=False)
    assert _cpu.unsupported_reason(build, {"avx", "avx2", "fma", "sse"}) is None
    reason = _cpu.unsupported_reason(build, {"avx", "sse"})
    assert reason is not None and "lacks avx2, fma" in reason
    assert "pip install --no-binary refract refract" in reason and "\n" not in reason
    # unknown flags (no /proc/cpuinfo): never refuse on a guess
    assert cpuinfo.missing_features(("avx2",), None) == []
    # a native build records no baseline
    assert _cpu.unsupported_reason(types.SimpleNamespace(X86_BASELINE=()), set()) is None
    # another architecture is not checked against x86 flags
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert _cpu.unsupported_reason(build, set()) is None
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setenv(_cpu.SKIP_ENV, "1")
    assert _cpu.unsupported_reason(build, set()) is None


def test_cpu_guard_blocks_only_the_core_import(monkeypatch: pytest.MonkeyPatch) -> None:
    guard = _cpu._Guard()
    monkeypatch.setattr(_cpu, "unsupported_reason", lambda: "too old")
    with pytest.raises(ImportError, match="too old"):
        guard.find_spec("refract._core", None)
    assert guard.find_spec("refract.inputs.corpus", None) is None
    monkeypatch.setattr(_cpu, "unsupported_reason", lambda: None)
    assert guard.find_spec("refract._core", None) is None
    assert any(isinstance(f, _cpu._Guard) for f in sys.meta_path)  # installed by refract


# --- release wheels ------------------------------------------------------------------------


def test_cibuildwheel_config_is_portable() -> None:
    cbw = PYPROJECT["tool"]["cibuildwheel"]
    assert cbw["linux"]["archs"] == ["x86_64", "aarch64"]
    assert "manylinux" in cbw["linux"]["manylinux-x86_64-image"]
    assert "auditwheel repair" in cbw["linux"]["repair-wheel-command"]
    assert cbw["macos"]["archs"] == ["arm64"]
    mac = cbw["macos"]["environment"]["CMAKE_ARGS"]
    assert "-DGGML_METAL=ON" in mac and "-DGGML_METAL_EMBED_LIBRARY=ON" in mac
    for env in (cbw["environment"], cbw["macos"]["environment"]):
        assert "-DREFRACT_PORTABLE=ON" in env["CMAKE_ARGS"]
        assert "native" not in env["CMAKE_ARGS"]
    assert "pytest" in cbw["test-command"]
