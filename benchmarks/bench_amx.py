"""What ggml's AMX kernels give: the same KLD pass and trajectory decode in two builds of refract.

    python benchmarks/bench_amx.py --python-on VENV_ON/bin/python --python-off VENV_OFF/bin/python
        [--model demo] [--chunks 8] [--ctx 512] [--n-predict 64] [--prompts 16] [--rounds 2]

Build the two on the same AMX machine (issue 26), e.g.

    python -m venv on && CC=clang-16 CXX=clang++-16 CMAKE_ARGS=-DREFRACT_AMX=ON \\
        on/bin/pip install '.[demo]' -Cbuild-dir=build/amx-on
    python -m venv off && CMAKE_ARGS=-DREFRACT_AMX=OFF off/bin/pip install '.[demo]' \\
        -Cbuild-dir=build/amx-off

Each build runs in its own child process (one model load each), alternating ``--rounds``
times so that drift on a shared machine hits both alike: a q8_0-vs-f16 KLD pass over
``--chunks`` windows and a batched f16 greedy decode of ``--prompts`` bundled prompts. The
table prints each build's median time, the ratio, and whether the numbers differ between the
builds beyond run-to-run noise (mean KLD, and the prompts whose greedy trajectory differs: AMX
changes summation order, so near-tie flips are expected, as between any two CPU kernels).
Each child also reports its build's AMX decision, so a table of two "off" builds says so.
Not a test: every number in the table comes from this one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import json, sys, time
    import refract._core as core
    from refract import Engine
    from refract.inputs.corpus import bundled_corpus_path, read_text
    from refract.system.probe import amx_status
    from refract.inputs.promptset import load_prompts
    from refract.inputs.model import resolve_model

    args = json.loads(sys.argv[1])
    eng = Engine(resolve_model(args["model"]))
    text = read_text(bundled_corpus_path("test"))
    prompts = [p.prompt for p in load_prompts(None)][: args["prompts"]]
    t0 = time.perf_counter()
    [res] = eng.kld(text, "ctk=f16,ctv=f16", ["ctk=q8_0,ctv=q8_0"], ctx=args["ctx"],
                    chunks=args["chunks"])
    t1 = time.perf_counter()
    out = eng.greedy(prompts, "ctk=f16,ctv=f16", n_predict=args["n_predict"], ctx=args["ctx"])
    t2 = time.perf_counter()
    print(json.dumps({
        "kld_s": t1 - t0, "decode_s": t2 - t1, "mean_kld": res.mean_kld,
        "trajectories": [o.tolist() for o in out], "amx": amx_status(),
        "buffer_types": core.cpu_buffer_types(),
    }))
    """
)


def run(python: str, args: dict[str, object]) -> dict[str, object]:
    proc = subprocess.run([python, "-c", CHILD, json.dumps(args)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        sys.exit(f"{python}: the benchmark child failed (exit {proc.returncode}): {tail}")
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--python-on", required=True, help="interpreter of the build with AMX in")
    ap.add_argument("--python-off", required=True, help="interpreter of the build without AMX")
    ap.add_argument("--model", default="demo")
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--n-predict", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    args = {"model": a.model, "chunks": a.chunks, "ctx": a.ctx, "n_predict": a.n_predict,
            "prompts": a.prompts}
    runs: dict[str, list[dict[str, object]]] = {"on": [], "off": []}
    for r in range(a.rounds):
        for name, py in (("on", a.python_on), ("off", a.python_off)):
            runs[name].append(run(py, args))
            print(f"round {r + 1}: {name} done", file=sys.stderr, flush=True)
    for name in ("on", "off"):
        first = runs[name][0]
        amx = first["amx"]
        assert isinstance(amx, dict)
        print(f"{name:>3}: AMX {'in' if amx['enabled'] else 'out'} ({amx['compiler']}, "
              f"check {amx['compiler_check']}); buffer types {first['buffer_types']}")
    on_amx = runs["on"][0]["amx"]
    if not (isinstance(on_amx, dict) and on_amx["enabled"]) or "AMX" not in list(
        runs["on"][0]["buffer_types"]  # type: ignore[call-overload]
    ):
        print("note: the --python-on build has no AMX buffer type here, so this table compares "
              "two builds without AMX (an AMX CPU and a compiler that passes the check needed)")
    print(f"\n{'work':<28} {'AMX on':>10} {'AMX off':>10} {'on/off':>8}")
    for key, label in (("kld_s", f"KLD pass ({a.chunks} x {a.ctx})"),
                       ("decode_s", f"greedy decode ({a.prompts} x {a.n_predict})")):
        on = statistics.median(float(str(x[key])) for x in runs["on"])
        off = statistics.median(float(str(x[key])) for x in runs["off"])
        print(f"{label:<28} {on:>9.2f}s {off:>9.2f}s {on / off:>7.2f}x")
    kld_on = [float(str(x["mean_kld"])) for x in runs["on"]]
    kld_off = [float(str(x["mean_kld"])) for x in runs["off"]]
    noise = max(max(kld_on) - min(kld_on), max(kld_off) - min(kld_off))
    print(f"\nmean KLD q8_0 vs f16: on {kld_on[0]:.6f}, off {kld_off[0]:.6f} "
          f"(|diff| {abs(kld_on[0] - kld_off[0]):.2e}; run-to-run spread {noise:.2e})")
    t_on, t_off = runs["on"][0]["trajectories"], runs["off"][0]["trajectories"]
    assert isinstance(t_on, list) and isinstance(t_off, list)
    differ = sum(1 for x, y in zip(t_on, t_off, strict=True) if x != y)
    print(f"f16 greedy trajectories that differ between the builds: {differ}/{len(t_on)}")


if __name__ == "__main__":
    main()
