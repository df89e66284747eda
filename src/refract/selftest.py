"""``refract selftest``: is this build sane, and (with a model) is decoding deterministic?"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from refract.engine.facade import Engine

REFERENCE = "ctk=f16,ctv=f16"
SELFTEST_CTX = 128
SELFTEST_CHUNKS = 2
SELFTEST_PROMPT = "The capital of France is"

__all__ = ["Check", "SelftestResult", "run_selftest"]


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class SelftestResult:
    build: dict[str, Any]
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def _corpus_tokens(engine: Engine, n_needed: int) -> Any:
    """Bundled prompt texts, repeated until there are ``n_needed`` tokens (no download)."""
    from refract.inputs.promptset import load_prompts

    text = "\n\n".join(p.prompt for p in load_prompts(None))
    tokens = engine.tokenize(text)
    reps = 1
    while tokens.size < n_needed:
        reps *= 2
        tokens = engine.tokenize("\n\n".join([text] * reps))
    return tokens


def _model_checks(model: Path, threads: int | None) -> list[Check]:
    from refract.engine.facade import Engine

    checks: list[Check] = []
    with Engine(model, n_threads=threads) as eng:
        n_train = int(eng.model_info.get("n_ctx_train") or 0)
        ctx = min(SELFTEST_CTX, n_train) if n_train > 0 else SELFTEST_CTX
        checks.append(Check("model loads", True, f"{model.name}, {eng.n_threads} threads"))

        out = eng.greedy([SELFTEST_PROMPT], REFERENCE, n_predict=16, ctx=ctx)
        assert isinstance(out, list)  # topk=0: one id array per prompt, no top-k tuple
        first = out[0]
        try:
            text = repr(eng.detokenize(first).replace("\n", " ")[:60])
        except UnicodeDecodeError:  # a partial UTF-8 sequence at the end of 16 tokens
            text = f"ids {first.tolist()[:12]}"
        checks.append(
            Check("short generation", first.size > 0, f"{first.size} tokens: {text}")
        )
        out = eng.greedy([SELFTEST_PROMPT], REFERENCE, n_predict=16, ctx=ctx, _slot=1)
        assert isinstance(out, list)
        again = out[0]
        same = first.tolist() == again.tolist()
        checks.append(
            Check("ref-vs-ref generation is token-identical", same,
                  "identical" if same else f"{first.tolist()} vs {again.tolist()}")
        )

        tokens = _corpus_tokens(eng, SELFTEST_CHUNKS * ctx + 1)
        [res] = eng.kld(tokens, REFERENCE, [REFERENCE], ctx=ctx, chunks=SELFTEST_CHUNKS)
        zero = res.mean_kld == 0.0 and res.percentiles["max"] == 0.0
        checks.append(
            Check(
                f"ref-vs-ref KLD on {res.n_chunks} chunks is exactly 0",
                zero and res.n_chunks == SELFTEST_CHUNKS,
                f"mean {res.mean_kld:.3g} nats, max {res.percentiles['max']:.3g}, "
                f"{res.n_scored} tokens",
            )
        )
    return checks


def run_selftest(model: Path | None = None, threads: int | None = None) -> SelftestResult:
    """Build info and checks; with ``model``, a short generation and a ref-vs-ref KLD."""
    from refract.engine.facade import build_info
    from refract.system import cpuinfo
    from refract.system.probe import amx_status, run_matmul_probe

    info = build_info()
    result = SelftestResult(build=info)
    amx = amx_status()
    info["amx"] = amx
    flags = cpuinfo.cpu_flags() or set()
    cpu_amx = "amx_tile" in flags
    # never blindly on: AMX is in only after the configure-time compiler check passed, and on a
    # CPU with AMX it is either off or proved by the matmul probe below
    decided = amx["enabled"] is not None and not (amx["enabled"] and amx["compiler_check"] != "ok")
    state = "on" if amx["enabled"] else "off"
    result.checks.append(
        Check(
            "AMX decision",
            decided,
            f"{state} (CPU {'lists' if cpu_amx else 'has no'} AMX; compiler "
            f"{amx.get('compiler')}: tile-config check {amx.get('compiler_check')}): "
            f"{amx.get('reason')}",
        )
    )
    probe = run_matmul_probe()
    result.checks.append(
        Check(
            "ggml matrix multiply (child process, against a double reference)",
            probe.ok,
            probe.summary() if probe.ok else probe.message,
        )
    )
    kv = list(info.get("kv_types") or [])
    result.checks.append(
        Check("KV types resolved by name", "f16" in kv and "q8_0" in kv, ", ".join(kv))
    )
    commit = str(info.get("llama_cpp_commit"))
    result.checks.append(
        Check("llama.cpp commit recorded", re.fullmatch(r"[0-9a-f]{40}", commit) is not None,
              commit if commit != "unknown" else
              "unknown: the tree had neither a pin stamp nor git metadata")
    )
    if model is not None and not probe.ok:
        result.checks.append(
            Check("model checks", False, "not run: the matmul probe failed, so computing here "
                  "would crash this process")
        )
    elif model is not None:
        result.checks.extend(_model_checks(model, threads))
    return result
