"""Corpus KLD: refract's Engine.kld vs llama.cpp's own llama-perplexity, side by side.

    python benchmarks/kld_vs_llama_perplexity.py [--model PATH] [--corpus PATH] [--chunks 8]
        [--ctx 512] [--threads 2] [--candidates ctk=q8_0,ctv=q8_0 ctk=q4_0,ctv=q4_0]
        [--no-b512]

Builds llama-perplexity (and llama-completion, for bench_trajectory.py) once from the llama.cpp
tree refract links (vendor/llama.cpp, or REFRACT_LLAMA_CPP_DIR) into build/llama-tools, then
runs, with the same model, corpus, ctx, chunks, KV configs and threads:

* llama-perplexity: one ``--kl-divergence-base`` run with the f16/f16 reference (``-fa on``),
  then one ``--kl-divergence`` run per candidate; its Mean KLD, Same top p and PPLs are parsed
  from its output. By default llama-perplexity packs n_batch / ctx = 4 chunks into one batch;
  the whole set is repeated with ``-b <ctx>`` (one chunk per batch, as refract decodes).
* refract: one model load, one ``Engine.kld`` call (the reference decodes each chunk once and
  both candidates are compared against it).

The mean KLDs must agree to within 1e-3 nats (PASS/FAIL; exit status 1 on FAIL). llama-perplexity
stores the reference as 16-bit quantized log-probs and drops tokens below e^-16, so its number
is not bit-identical to refract's full-vocabulary double-precision one. Not a test: every
number in one table comes from the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOLS = ("llama-perplexity", "llama-completion")
DEFAULT_CANDIDATES = ("ctk=q8_0,ctv=q8_0", "ctk=q4_0,ctv=q4_0")
SHARED_CORPUS = Path("/work/shared/data/wikitext-2-test.txt")
TOLERANCE = 1e-3
# what refract's engine pins for the TurboQuant fork (no-ops on upstream llama.cpp)
FORK_SWITCHES = {"TURBO_AUTO_ASYMMETRIC": "0", "TURBO_LAYER_ADAPTIVE": "0"}


# --------------------------------------------------------------------------- shared helpers
def llama_source_dir() -> Path:
    env = os.environ.get("REFRACT_LLAMA_CPP_DIR")
    return Path(env).expanduser().resolve() if env else REPO / "vendor" / "llama.cpp"


def tools_build_dir(src: Path) -> Path:
    if src == (REPO / "vendor" / "llama.cpp").resolve():
        return REPO / "build" / "llama-tools"
    tag = hashlib.sha1(str(src).encode()).hexdigest()[:8]
    return REPO / "build" / f"llama-tools-{tag}"


def _git_stub(build: Path, src: Path) -> list[str]:
    """A downloaded tree has no .git: answer llama.cpp's build-info with the pinned commit
    instead of letting git report refract's own HEAD (as refract's CMakeLists does)."""
    stamp = src / "REFRACT_SOURCE.json"
    if not stamp.is_file():
        return []
    m = re.search(r'"llama_cpp_commit"\s*:\s*"([0-9a-f]{7})', stamp.read_text())
    short = m.group(1) if m else "unknown"
    stub = build / "git-stub.sh"
    stub.write_text(f'#!/bin/sh\ncase "$1" in rev-parse) echo {short} ;; '
                    "rev-list) echo 0 ;; esac\nexit 0\n")
    stub.chmod(0o755)
    return [f"-DGIT_EXECUTABLE={stub}"]


def ensure_llama_tools(jobs: int = 2) -> dict[str, Path]:
    """Paths of llama-perplexity and llama-completion, building them once if missing.

    ``REFRACT_LLAMA_TOOLS_DIR`` names a folder that already holds them instead, e.g. ``bin/``
    of a refract build tree configured with ``-DREFRACT_LLAMA_TOOLS=ON`` (same ggml objects,
    same flags, CUDA included).
    """
    given = os.environ.get("REFRACT_LLAMA_TOOLS_DIR")
    if given:
        paths = {t: Path(given).expanduser() / t for t in TOOLS}
        missing = [str(p) for p in paths.values() if not (p.is_file() and os.access(p, os.X_OK))]
        if missing:
            sys.exit(f"REFRACT_LLAMA_TOOLS_DIR={given}: missing {', '.join(missing)}")
        return paths
    src = llama_source_dir()
    if not (src / "include" / "llama.h").is_file():
        sys.exit(f"{src} is not a llama.cpp tree (no include/llama.h)")
    build = tools_build_dir(src)
    paths = {t: build / "bin" / t for t in TOOLS}
    if all(p.is_file() and os.access(p, os.X_OK) for p in paths.values()):
        return paths
    build.mkdir(parents=True, exist_ok=True)
    print(f"building {', '.join(TOOLS)} from {src} into {build} (once) ...", file=sys.stderr)
    log = build / "build.log"
    with log.open("w") as out:
        if not (build / "build.ninja").is_file():
            cmd = ["cmake", "-S", str(src), "-B", str(build), "-G", "Ninja",
                   "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF",
                   "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=OFF",
                   "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
                   "-DLLAMA_OPENSSL=OFF", "-DLLAMA_CURL=OFF", *_git_stub(build, src)]
            if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode:
                sys.exit(f"cmake configure failed; see {log}")
        cmd = ["cmake", "--build", str(build), "--target", *TOOLS, f"-j{jobs}"]
        if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode:
            sys.exit(f"cmake build failed; see {log}")
    return paths


def wait_for_quiet(threshold: float = 1.5, max_wait: float = 300.0) -> str:
    """Wait until the 1-min load average is below ``threshold`` or ``max_wait`` s have passed."""
    t0 = time.monotonic()
    load = os.getloadavg()
    said = -60.0
    while load[0] >= threshold and time.monotonic() - t0 < max_wait:
        if time.monotonic() - said >= 60:
            said = time.monotonic()
            print(f"  load {load[0]:.2f} >= {threshold}: waiting (up to {max_wait:.0f} s) ...",
                  file=sys.stderr, flush=True)
        time.sleep(10)
        load = os.getloadavg()
    waited = time.monotonic() - t0
    verdict = "quiet" if load[0] < threshold else f"NOT quiet after {waited:.0f} s, timing anyway"
    return (f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min) "
            f"on {os.cpu_count()} cores; {verdict} (waited {waited:.0f} s)")


def load_now() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


def fork_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for key, val in FORK_SWITCHES.items():
        env.setdefault(key, val)
    env.update(extra or {})
    return env


def default_corpus() -> Path:
    if SHARED_CORPUS.is_file():
        return SHARED_CORPUS
    from refract.inputs.corpus import default_corpus_path

    return default_corpus_path()


def default_model() -> Path:
    from refract.inputs.demo import demo_model_path

    return demo_model_path()


# --------------------------------------------------------------------------- llama-perplexity
@dataclass
class PplRun:
    wall_s: float
    mean_kld: float | None = None
    kld_se: float | None = None
    same_top_p: float | None = None
    ppl_q: float | None = None
    ppl_base: float | None = None
    n_seq: int | None = None


_FLOAT = r"([-+0-9.eEnaif]+)"


def _grab(pattern: str, text: str) -> float | None:
    m = re.search(pattern, text)
    return float(m.group(1)) if m else None


def run_perplexity(exe: Path, args: list[str], env: dict[str, str], log: Path) -> PplRun:
    t0 = time.perf_counter()
    proc = subprocess.run([str(exe), *args], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace")
    wall = time.perf_counter() - t0
    log.write_text(proc.stdout)
    if proc.returncode:
        tail = "\n".join(proc.stdout.splitlines()[-25:])
        sys.exit(f"llama-perplexity failed ({proc.returncode}): {' '.join(args)}\n{tail}")
    out = proc.stdout
    n_seq = re.search(r"n_seq=(\d+)", out)
    return PplRun(
        wall_s=wall,
        mean_kld=_grab(rf"Mean\s+KLD:\s*{_FLOAT}", out),
        kld_se=_grab(rf"Mean\s+KLD:\s*\S+\s*±\s*{_FLOAT}", out),
        same_top_p=_grab(rf"Same top p:\s*{_FLOAT}", out),
        ppl_q=_grab(rf"Mean PPL\(Q\)\s*:\s*{_FLOAT}", out),
        ppl_base=_grab(rf"Final estimate: PPL = {_FLOAT}", out),
        n_seq=int(n_seq.group(1)) if n_seq else None,
    )


def perplexity_set(exe: Path, common: list[str], candidates: Sequence[str], batch: int | None,
                   logdir: Path) -> tuple[PplRun, list[PplRun]]:
    """One base run (f16 reference) and one KLD run per candidate; base.bin in a temp dir."""
    from refract.kvconfig import KVConfig

    bargs = ["-b", str(batch)] if batch else []
    tag = f"b{batch}" if batch else "bdef"
    with tempfile.TemporaryDirectory(prefix="refract-kld-") as tmp:
        base_bin = str(Path(tmp) / "base.bin")
        base = run_perplexity(exe, [*common, *bargs, "-ctk", "f16", "-ctv", "f16",
                                    "--kl-divergence-base", base_bin],
                              fork_env(), logdir / f"ppl-{tag}-base.log")
        runs = []
        for i, cand in enumerate(candidates):
            cfg = KVConfig.parse(cand)
            runs.append(run_perplexity(
                exe, [*common, *bargs, "-ctk", cfg.ctk, "-ctv", cfg.ctv,
                      "--kl-divergence-base", base_bin, "--kl-divergence"],
                fork_env(cfg.env()), logdir / f"ppl-{tag}-cand{i}.log"))
    return base, runs


def _f(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


# --------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="GGUF (default: the demo model)")
    ap.add_argument("--corpus", type=Path, default=None,
                    help=f"text file (default: {SHARED_CORPUS} if present, else WikiText-2 test)")
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-wait", type=float, default=300.0,
                    help="seconds to wait for a 1-min load average below 1.5 before timing")
    ap.add_argument("--candidates", nargs="+", default=list(DEFAULT_CANDIDATES))
    ap.add_argument("--no-b512", action="store_true",
                    help="skip the extra llama-perplexity set with -b <ctx> (one chunk per batch)")
    args = ap.parse_args()

    from refract import Engine
    from refract.engine.facade import build_info
    from refract.kvconfig import KVConfig

    model = args.model or default_model()
    corpus = args.corpus or default_corpus()
    candidates = [KVConfig.parse(c).label for c in args.candidates]
    tools = ensure_llama_tools()
    logdir = tools_build_dir(llama_source_dir()) / "logs"
    logdir.mkdir(parents=True, exist_ok=True)

    info = build_info()
    print("KLD: refract Engine.kld vs llama-perplexity (same llama.cpp tree)")
    print(f"  llama.cpp  {info['llama_cpp_commit'][:12]} ({info['llama_cpp_source']}); "
          f"tools from {tools['llama-perplexity'].parent}")
    print(f"  model      {model}")
    print(f"  corpus     {corpus}")
    print(f"  chunks={args.chunks} ctx={args.ctx} threads={args.threads} -fa on; "
          f"reference ctk=f16,ctv=f16; candidates {', '.join(candidates)}")
    print(f"  before timing: {wait_for_quiet(max_wait=args.max_wait)}")

    common = ["-m", str(model), "-f", str(corpus), "-c", str(args.ctx),
              "--chunks", str(args.chunks), "-t", str(args.threads), "-fa", "on"]
    sets: list[tuple[str, PplRun, list[PplRun]]] = []
    base, runs = perplexity_set(tools["llama-perplexity"], common, candidates, None, logdir)
    sets.append((f"llama-perplexity (default -b, n_seq={runs[0].n_seq})", base, runs))
    load_ppl = load_now()

    t0 = time.perf_counter()
    eng = Engine(model, n_threads=args.threads, flash_attn=True)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    text = corpus.read_text(encoding="utf-8")
    ours = eng.kld(text, reference="ctk=f16,ctv=f16", candidates=candidates,
                   ctx=args.ctx, chunks=args.chunks)
    t_kld = time.perf_counter() - t0
    eng.close()
    load_ours = load_now()

    if not args.no_b512:
        base5, runs5 = perplexity_set(tools["llama-perplexity"], common, candidates,
                                      args.ctx, logdir)
        sets.append((f"llama-perplexity -b {args.ctx} (n_seq={runs5[0].n_seq})", base5, runs5))
    load_end = load_now()

    r0 = ours[0]
    print(f"  scored tokens: {r0.n_scored} ({r0.n_chunks} chunks × {r0.scored_per_chunk}) of "
          f"{r0.n_corpus_tokens} corpus tokens")
    print()
    header = (f"{'candidate':<20} {'source':<36} {'mean KLD':>10} {'± se':>9} "
              f"{'|Δ| vs ours':>12} {'same top p':>11} {'PPL(cand)':>10}  verdict")
    print(header)
    print("-" * len(header))
    ok = True
    for i, cand in enumerate(candidates):
        res = ours[i]
        print(f"{cand:<20} {'refract Engine.kld':<36} {res.mean_kld:>10.6f} "
              f"{res.kld_se:>9.6f} {'':>12} {res.same_top_p_pct:>10.3f}% {res.ppl_cand:>10.4f}")
        for name, _, rs in sets:
            run = rs[i]
            if run.mean_kld is None:
                diff_s, verdict = "n/a", "FAIL (no Mean KLD parsed)"
                ok = False
            else:
                diff = abs(run.mean_kld - res.mean_kld)
                diff_s = f"{diff:.2e}"
                verdict = "PASS" if diff < TOLERANCE else "FAIL"
                ok &= diff < TOLERANCE
            print(f"{'':<20} {name:<36} {_f(run.mean_kld, '10.6f'):>10} "
                  f"{_f(run.kld_se, '9.6f'):>9} {diff_s:>12} "
                  f"{_f(run.same_top_p, '10.3f'):>10}% {_f(run.ppl_q, '10.4f'):>10}  {verdict}")
    print(f"PPL(f16 reference): refract {r0.ppl_ref:.4f}; "
          + "; ".join(f"{name.split(' (')[0]} {_f(b.ppl_base, '.4f')}" for name, b, _ in sets))
    print(f"tolerance |Δ mean KLD| < {TOLERANCE:g} nats: {'PASS' if ok else 'FAIL'}")

    print()
    header = f"{'wall time':<46} {'base':>8} " + " ".join(
        f"{'cand' + str(i + 1):>8}" for i in range(len(candidates))) + f" {'total':>8} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    ours_total = t_load + t_kld
    for name, b, rs in sets:
        total = b.wall_s + sum(r.wall_s for r in rs)
        print(f"{name:<46} {b.wall_s:>7.2f}s " + " ".join(f"{r.wall_s:>7.2f}s" for r in rs)
              + f" {total:>7.2f}s {total / ours_total:>6.2f}x")
    print(f"{'refract: model load + Engine.kld (all cands)':<46} {t_load:>7.2f}s "
          + " ".join(f"{'':>8}" for _ in candidates) + f" {ours_total:>7.2f}s {1.0:>6.2f}x")
    print(f"  (refract: load {t_load:.2f} s, kld {t_kld:.2f} s incl. reading + tokenizing the "
          f"corpus; ratio = llama-perplexity total / refract total, > 1 means refract is faster)")
    print(f"  1/5-min load after llama-perplexity {load_ppl}, after refract {load_ours}, "
          f"at end {load_end}; llama-perplexity logs in {logdir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
