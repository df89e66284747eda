#!/usr/bin/env bash
# The other flavour's CI job (issue 20): what ships is the TurboQuant flavour (the wheel .ci/run
# tests in full); this builds the registry-default tree the way a user's `pip install .` from a
# git checkout does (native CPU flags, REFRACT_LLAMA_FLAVOUR unset, vendor/llama.cpp from the
# pinned llama-cpp-python sdist), checks the installed extension is that flavour and commit,
# runs every engine test that needs no real model on it, and then the README's first command
# (a real demo-model score) on that same build, with an empty cache and WikiText-2 unreachable.
#
# Everything lives under build/ (git-ignored):
#
#   REFRACT_UPSTREAM_VENV       the venv, recreated each run  (default build/upstream-venv)
#   REFRACT_UPSTREAM_BUILD_DIR  scikit-build-core build dir   (default build/upstream-build)
#   CMAKE_BUILD_PARALLEL_LEVEL  compile jobs (default 2)
#   PYTHON                      interpreter for the venv      (default python3)
#
# The build dir is kept between runs, so only the first run compiles llama.cpp (~3-4 minutes
# at -j2 on a 2-core machine).
set -euo pipefail

root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

venv="${REFRACT_UPSTREAM_VENV:-$root/build/upstream-venv}"
build_dir="${REFRACT_UPSTREAM_BUILD_DIR:-$root/build/upstream-build}"
python="${PYTHON:-python3}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
want_commit="$("$python" -c 'import runpy, sys; print(runpy.run_path(sys.argv[1])["PINS"]["default"]["llama_cpp_commit"])' \
  tools/fetch_llama.py)"

echo "== upstream: fresh venv at $venv"
"$python" -m venv --clear "$venv"
vpy="$venv/bin/python"
"$vpy" -m pip install --disable-pip-version-check -q --upgrade pip
# build requirements up front and the build without isolation, so the venv's stable paths
# keep the CMake cache in the build dir valid from one run to the next
"$vpy" -m pip install --disable-pip-version-check -q "scikit-build-core>=0.11" "nanobind==3.1.0"

echo "== upstream: pip install '.[test,demo]' with no flavour set (build dir $build_dir)"
start=$SECONDS
env -u REFRACT_LLAMA_FLAVOUR -u REFRACT_LLAMA_CPP_DIR "$vpy" -m pip install \
  --disable-pip-version-check -q --no-build-isolation -Cbuild-dir="$build_dir" ".[test,demo]"
echo "== upstream: build + install took $((SECONDS - start)) s"

(cd / && "$vpy" - "$want_commit" <<'EOF'
import sys
import refract._core as core
from refract.engine.facade import build_info
info, want = build_info(), sys.argv[1]
print(f"refract._core: {core.__file__}\n  llama.cpp {info['llama_cpp_flavour']} "
      f"{info['llama_cpp_commit']} from {info['llama_cpp_source']}")
if info["llama_cpp_flavour"] != "upstream" or info["llama_cpp_commit"] != want:
    sys.exit(f"upstream: the installed extension is {info['llama_cpp_flavour']} "
             f"{info['llama_cpp_commit']}, expected upstream {want}")
if info["turbo_kv_types"]:
    sys.exit(f"upstream: the registry tree has turbo types {info['turbo_kv_types']}?")
EOF
)

echo "== upstream: tests (every test marked engine by tests/conftest.py, real-model ones aside)"
# The real-model (demo) engine tests run in full on the shipped wheel; here the README's first
# command below scores the demo model on this build end to end.
# the wheel's venv (the other flavour) lets the two-builds report test score on both
REFRACT_OTHER_BUILD_PYTHON="$root/build/ci-venv/bin/python" \
  "$vpy" -m pytest -q -p no:cacheprovider -m "engine and not demo" tests

echo "== upstream: the README's first command (bundled corpus, offline)"
cache="$root/build/ci-readme-cache" report="$root/build/ci-readme-report.json"
rm -rf "$cache" "$report"
mkdir -p "$cache"
cp -r "${REFRACT_CACHE_DIR:-$root/build/ci-cache}/models" "$cache/" 2>/dev/null || true
# Fewer KLD chunks and tokens than the defaults (4 x 512, 32 tokens per trajectory) keep this
# near 1-2 minutes on 2 cores; the code path is the same.
(cd "$root/build" && REFRACT_CACHE_DIR="$cache" REFRACT_WIKITEXT_URL="http://127.0.0.1:9/none.zip" \
  "$venv/bin/refract" score --model demo --candidate ctk=q8_0,ctv=q8_0 \
    --chunks 4 --n-predict 32 --no-progress --json-out "$report")
"$vpy" - "$report" "$cache" <<'PY'
import json, pathlib, sys
report, cache = json.load(open(sys.argv[1])), pathlib.Path(sys.argv[2])
name = report["provenance"]["corpus"]["name"]
assert name == "bundled:austen-pride-and-prejudice", f"the demo scored on {name!r}"
assert not list(cache.glob("wikitext-2-raw/*.raw")), "the demo score fetched WikiText-2"
assert report["environment"]["llama_cpp_flavour"] == "upstream", report["environment"]
assert report["composite"] is not None and report["band"], "the README's command measured nothing"
print(f"README first command: corpus {name}, composite {report['composite']:.2f} "
      f"{report['band']} (flavour {report['environment']['llama_cpp_flavour']})")
PY
