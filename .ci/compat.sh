#!/usr/bin/env bash
# Compat CI step: build refract's C++ against an upstream llama.cpp tree of the era the
# TurboQuant fork is based on (upstream b8871, 2026-04-21) and run the engine tests on it.
#
# The tree is tools/fetch_llama.py's "compat" pin (llama-cpp-python==0.3.21 sdist, upstream
# llama.cpp f535774 = b8942, 2026-04-26), passed to the build through REFRACT_LLAMA_CPP_DIR
# exactly as a user building against the fork would. Everything lives under build/ (git-ignored):
#
#   REFRACT_COMPAT_DIR        the compat llama.cpp tree     (default build/compat-llama.cpp)
#   REFRACT_COMPAT_VENV       the venv, recreated each run  (default build/compat-venv)
#   REFRACT_COMPAT_BUILD_DIR  scikit-build-core build dir   (default build/compat-build/{wheel_tag})
#   REFRACT_SDIST_CACHE       optional cache of downloaded sdists (read by fetch_llama.py)
#   REFRACT_COMPAT_EXTRAS     extras to install             (default test; test,demo adds the
#                             real-model engine tests)
#   CMAKE_BUILD_PARALLEL_LEVEL  compile jobs (default 2)
#   PYTHON                    interpreter for the venv      (default python3)
#
# The build dir is kept between runs, so only the first run compiles llama.cpp (~9 min at -j2
# on a busy 2-core machine); later runs rebuild only what changed.
set -euo pipefail

root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

tree="${REFRACT_COMPAT_DIR:-$root/build/compat-llama.cpp}"
venv="${REFRACT_COMPAT_VENV:-$root/build/compat-venv}"
wheel_tag='{wheel_tag}'  # expanded by scikit-build-core, not by bash
build_dir="${REFRACT_COMPAT_BUILD_DIR:-$root/build/compat-build/$wheel_tag}"
python="${PYTHON:-python3}"
extras="${REFRACT_COMPAT_EXTRAS:-test}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"

echo "== compat: fetching the compat llama.cpp tree into $tree"
"$python" tools/fetch_llama.py "$tree" --pin compat
tree="$(cd -- "$tree" && pwd)"
want_commit="$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["llama_cpp_commit"])' \
  "$tree/REFRACT_SOURCE.json")"

echo "== compat: fresh venv at $venv"
"$python" -m venv --clear "$venv"
vpy="$venv/bin/python"
"$vpy" -m pip install --disable-pip-version-check -q --upgrade pip
# build requirements installed up front and the build run without isolation, so the venv's
# stable paths keep the CMake cache in the build dir valid from one run to the next
"$vpy" -m pip install --disable-pip-version-check -q "scikit-build-core>=0.10" "nanobind>=2.4"

echo "== compat: building refract against $tree (build dir $build_dir)"
start=$SECONDS
REFRACT_LLAMA_CPP_DIR="$tree" "$vpy" -m pip install --disable-pip-version-check \
  --no-build-isolation -Cbuild-dir="$build_dir" ".[$extras]"
echo "== compat: build + install took $((SECONDS - start)) s"

# the installed extension must be the one built from the compat tree
(cd / && "$vpy" - "$want_commit" <<'EOF'
import sys
import refract._core as core
got, want = core.llama_cpp_commit(), sys.argv[1]
print(f"refract._core: {core.__file__}\n  llama.cpp {got} from {core.llama_cpp_source()}")
if got != want:
    sys.exit(f"compat: the installed extension was built from llama.cpp {got}, expected {want}")
EOF
)

echo "== compat: tests (every test marked engine by tests/conftest.py)"
# Every test that needs the native engine (decode, KLD, axes, trajectories, CLI scoring, and
# any engine test added later) is marked `engine` by tests/conftest.py. Tests of the real demo
# model need the demo extra; without it they are deselected (marker demo), never skipped.
marks="engine"
case ",$extras," in *,demo,*) ;; *) marks="engine and not demo" ;; esac
# The loader fuzz test is the contract of the pinned llama.cpp (what users build and what the
# wheels carry): the compat era's own GGUF parser dies with SIGFPE on a tensor dimension of 0
# (4 of 312 mutations), a bug of that llama.cpp fixed upstream since, not of refract's C++,
# which is what this job checks against the fork-era API.
"$vpy" -m pytest -q -p no:cacheprovider -m "$marks" \
  --deselect tests/test_fuzz_loader.py::test_damaged_gguf_files_fail_cleanly tests
