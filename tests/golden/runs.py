"""The fixed runs whose JSON reports must not change under a refactor (issue 21).

Four runs on the demo model, small enough for CI: the default axes, ``--full``, two
candidates in one run, and a one-model matrix. :func:`run_all` writes each run's reports and
returns them normalized (:func:`normalize`): what legitimately differs between two runs of the
same inputs on the same machine (timestamps, timings, the load-dependent OpenMP note, the
cache and output directories) is taken out; everything else must be equal.

``python tests/golden/runs.py`` (re)records the goldens for this machine's key (llama.cpp
flavour and commit, CPU features: greedy trajectories differ between CPU kinds); the test in
``tests/test_golden.py`` compares against them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SMALL = ["--ctx", "128", "--chunks", "2", "--n-predict", "16"]
RNIAH = ["--rniah-lengths", "512", "--rniah-positions", "0.5", "--rniah-n-predict", "16"]
RUNS: dict[str, list[str]] = {
    "default": ["-c", "ctk=q8_0,ctv=q8_0", *SMALL],
    "full": ["-c", "ctk=q8_0,ctv=q8_0", "--full", *SMALL, *RNIAH],
    "multi": ["-c", "ctk=q8_0,ctv=q8_0", "-c", "ctk=q4_0,ctv=q4_0", *SMALL],
}
MATRIX = """\
reference = "ctk=f16,ctv=f16"
candidates = ["ctk=q8_0,ctv=q8_0"]
[settings]
ctx = 128
chunks = 2
n_predict = 16
[[models]]
name = "Gemma demo"
path = "demo"
"""
#: what differs between two runs of the same code on the same machine: clocks, the OpenMP note
#: (it depends on the load), where the build tree was (``llama_cpp_source`` names the archive's
#: path; flavour and commit are compared), the matrix's resume key (it hashes the model
#: file's path) and the reference store's entry names (they hash the extension binary)
VOLATILE_KEYS = frozenset({"timestamp", "timings", "omp_wait_policy", "seconds",
                           "llama_cpp_source", "cell_fingerprint", "entry_id"})


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "refract", *args]


def machine_key(report: dict[str, Any]) -> str:
    """Where a golden's exact numbers hold: build flavour + commit and the CPU's features."""
    env = report.get("environment") or {}
    # the CPU model too: one portable binary on two CPU kinds may still round differently
    seen = f"{env.get('system_info')}|{env.get('cpu')}"
    cpu = hashlib.sha256(seen.encode()).hexdigest()[:8]
    commit = str(env.get("llama_cpp_commit") or "unknown")[:7]
    return f"{env.get('llama_cpp_flavour', 'unknown')}-{commit}-{cpu}"


def normalize(obj: Any, roots: dict[str, str]) -> Any:
    """Drop volatile keys; write the run's own directories as placeholders."""
    if isinstance(obj, dict):
        return {k: normalize(v, roots) for k, v in obj.items() if k not in VOLATILE_KEYS}
    if isinstance(obj, list):
        return [normalize(v, roots) for v in obj]
    if isinstance(obj, str):
        for path, name in roots.items():
            obj = obj.replace(path, name)
        return obj
    return obj


def _roots(out: Path) -> dict[str, str]:
    from refract.defaults import default_cache_dir

    return {str(out / "store"): "<store>", str(out): "<out>",
            str(default_cache_dir()): "<cache>"}


def run_all(out: Path) -> dict[str, Any]:
    """Every run's reports (normalized), keyed ``run/file name``."""
    got: dict[str, Any] = {}
    # a reference store of the runs' own, empty at the start: the first run stores the noise
    # floor and R-NIAH/PLAD references, the later ones reuse them -- with the same numbers
    env = {**os.environ, "COLUMNS": "100", "REFRACT_REFERENCE_CACHE_DIR": str(out / "store")}
    for name, args in RUNS.items():
        d = out / name
        d.mkdir(parents=True)
        subprocess.run(_cli("score", "--model", "demo", *args, "--out-dir", str(d)),
                       check=True, env=env, capture_output=True)
        for f in sorted(d.glob("*.json")):
            got[f"{name}/{f.name}"] = json.loads(f.read_text())
    m = out / "matrix"
    m.mkdir()
    (m / "matrix.toml").write_text(MATRIX)
    subprocess.run(_cli("matrix", str(m / "matrix.toml"), "--out-dir", str(m / "out")),
                   check=True, env=env, capture_output=True)
    for f in sorted((m / "out").rglob("*.json")):
        if f.name.startswith("matrix-") or f.name == "leaderboard.json":
            continue
        got[f"matrix/{f.relative_to(m / 'out')}"] = json.loads(f.read_text())
    roots = _roots(out)
    return {k: normalize(v, roots) for k, v in got.items()}


def golden_path(key: str) -> Path:
    return HERE / f"{key}.json"


def differences(got: Any, want: Any, path: str = "") -> list[str]:
    """Every key path at which two normalized reports differ."""
    if isinstance(got, dict) and isinstance(want, dict):
        return [d for k in sorted(set(got) | set(want))
                for d in differences(got.get(k), want.get(k), f"{path}.{k}")]
    if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        return [d for i, (a, b) in enumerate(zip(got, want, strict=True))
                for d in differences(a, b, f"{path}[{i}]")]
    return [] if got == want else [path]


def main() -> None:
    """Record this machine's goldens, printing what changed against the recorded ones."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        reports = run_all(Path(tmp))
    key = machine_key(next(iter(reports.values())))
    old = golden_path(key)
    if old.is_file():
        for path in differences(reports, json.loads(old.read_text())):
            print(f"changed: {path}")
    old.write_text(json.dumps(reports, indent=1, sort_keys=True) + "\n")
    print(f"wrote {old} ({len(reports)} reports)")


if __name__ == "__main__":
    main()
