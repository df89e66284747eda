#!/usr/bin/env bash
# TurboQuant flavour CI step: build refract with REFRACT_LLAMA_FLAVOUR=turboquant (the fork's
# pinned tree, vendor/llama.cpp-turboquant, filled by tools/fetch_llama.py --pin turboquant from
# REFRACT_TURBOQUANT_ARCHIVE and verified against the pin), check that the installed extension
# is that flavour and commit with the turbo KV types, and run every engine test on it.
#
# Everything lives under build/ (git-ignored) and vendor/llama.cpp-turboquant (git-ignored):
#
#   REFRACT_TURBOQUANT_ARCHIVE  the fork's archive: a path or URL (default: the shared snapshot
#                               ../shared/vendor/llama-cpp-turboquant-69d8e4b.tar.gz; without
#                               it, fetch_llama.py falls back to the fork's public archive)
#   REFRACT_TURBO_VENV          the venv, recreated each run  (default build/turbo-venv)
#   REFRACT_TURBO_BUILD_DIR     scikit-build-core build dir   (default build/turbo-build)
#   REFRACT_TURBO_EXTRAS        extras to install             (default test,demo)
#   CMAKE_BUILD_PARALLEL_LEVEL  compile jobs (default 2)
#   PYTHON                      interpreter for the venv      (default python3)
#
# The build dir is kept between runs: only the first run compiles llama.cpp (about 4 minutes at
# -j2 on a 2-core machine).
set -euo pipefail

root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

snapshot="$root/../shared/vendor/llama-cpp-turboquant-69d8e4b.tar.gz"
if [[ -z "${REFRACT_TURBOQUANT_ARCHIVE:-}" && -f "$snapshot" ]]; then
  export REFRACT_TURBOQUANT_ARCHIVE="$snapshot"
fi
venv="${REFRACT_TURBO_VENV:-$root/build/turbo-venv}"
build_dir="${REFRACT_TURBO_BUILD_DIR:-$root/build/turbo-build}"
python="${PYTHON:-python3}"
extras="${REFRACT_TURBO_EXTRAS:-test,demo}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
want_commit="$("$python" -c 'import runpy, sys; print(runpy.run_path(sys.argv[1])["FORK_PINS"]["turboquant"]["llama_cpp_commit"])' \
  tools/fetch_llama.py)"

echo "== turbo: fresh venv at $venv"
"$python" -m venv --clear "$venv"
vpy="$venv/bin/python"
"$vpy" -m pip install --disable-pip-version-check -q --upgrade pip
# the nanobind of the committed stub; build requirements up front, build without isolation
"$vpy" -m pip install --disable-pip-version-check -q "scikit-build-core>=0.11" "nanobind==3.1.0"

echo "== turbo: building refract with REFRACT_LLAMA_FLAVOUR=turboquant" \
  "(archive ${REFRACT_TURBOQUANT_ARCHIVE:-public}, build dir $build_dir)"
start=$SECONDS
REFRACT_LLAMA_FLAVOUR=turboquant "$vpy" -m pip install --disable-pip-version-check \
  --no-build-isolation -Cbuild-dir="$build_dir" ".[$extras]"
echo "== turbo: build + install took $((SECONDS - start)) s"

# the installed extension must be the fork's pinned tree, with its turbo KV types
(cd / && "$vpy" - "$want_commit" <<'EOF'
import sys
import refract._core as core
from refract.engine import build_info
info, want = build_info(), sys.argv[1]
print(f"refract._core: {core.__file__}\n  llama.cpp {info['llama_cpp_flavour']} "
      f"{info['llama_cpp_commit']} from {info['llama_cpp_source']}\n"
      f"  turbo KV types: {info['turbo_kv_types']}")
if info["llama_cpp_flavour"] != "turboquant" or info["llama_cpp_commit"] != want:
    sys.exit(f"turbo: the installed extension is {info['llama_cpp_flavour']} "
             f"{info['llama_cpp_commit']}, expected turboquant {want}")
if info["turbo_kv_types"] != ["turbo2", "turbo3", "turbo4"]:
    sys.exit(f"turbo: the fork build has turbo KV types {info['turbo_kv_types']}")
EOF
)

echo "== turbo: tests (every test marked engine by tests/conftest.py)"
marks="engine"
case ",$extras," in *,demo,*) ;; *) marks="engine and not demo" ;; esac
# As in .ci/compat.sh: the loader fuzz test is the contract of the pinned upstream llama.cpp; the
# fork (upstream b8871) has that era's GGUF parser, which dies with SIGFPE on a tensor dimension
# of 0 (4 of 312 mutations), a llama.cpp bug fixed upstream since, not refract's.
"$vpy" -m pytest -q -p no:cacheprovider -m "$marks" \
  --deselect tests/test_fuzz_loader.py::test_damaged_gguf_files_fail_cleanly tests
