"""Report builders shared by the report, leaderboard, CLI and not-measured tests: axis results
shaped like refract-llm's published cases, whole reports through the real builder, verified
reports (with provenance and settings) and a directory of them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from refract.report.build import build_report
from refract.report.io import write_report


def make_axes(
    gtm: float | None = 76.65,
    kld: float | None = 99.71,
    rniah: float | None = 100.0,
    plad: float | None = 91.34,
    rniah_confidence: str = "ok",
) -> dict[str, dict[str, Any] | None]:
    rng = np.random.default_rng(0)
    per_prompt = []
    for i in range(12):
        ref = list(range(100 + i, 140 + i))
        div = 40 if i % 3 == 0 else 5 + 3 * i
        cand = ref[:div] + [7] * (40 - div)
        per_prompt.append(
            {
                "id": f"p-{i:03d}",
                "category": "factual",
                "prompt": f"Prompt number {i}",
                "ref_token_ids": ref,
                "cand_token_ids": cand,
                "first_divergence": div if div < 40 else None,
                "prefix_agreement_length": div,
                "cand_length": len(cand),
                "ref_length": len(ref),
                "matched": div >= 40,
            }
        )
    cells = [
        {
            "length": length,
            "position": pos,
            "n_trials": 1,
            "base_acc": 1.0,
            "cand_acc": 0.0 if (length == 16384 and pos == 0.9) else 1.0,
            "degradation": 1.0 if (length == 16384 and pos == 0.9) else 0.0,
            "needle_logprob_ref": -0.125,
            "needle_logprob_cand": -2.5,
        }
        for length in (4096, 8192, 16384)
        for pos in (0.1, 0.5, 0.9)
    ]
    per_token = rng.lognormal(mean=-6.0, sigma=1.5, size=2000).astype(np.float32)
    return {
        "gtm": None
        if gtm is None
        else {
            "score": gtm,
            "full_match_rate": 4 / 12,
            "median_first_divergence": 17.0,
            "mean_prefix_agreement_length": 20.0,
            "mean_cand_length": 40.0,
            "mean_ref_length": 40.0,
            "n_prompts": 12,
            "n_tokens_each": 40,
            "per_prompt": per_prompt,
        },
        "kld": None
        if kld is None
        else {
            "score": kld,
            "mean_kld": float(-math.log(kld / 100)),
            "kld_se": np.float64(0.0001),
            "kld_ci95": [0.0027, 0.0031],
            "kld_percentiles": {
                "max": 0.9,
                "99.9": 0.2,
                "99": 0.05,
                "95": 0.01,
                "90": 0.006,
                "median": 0.0012,
                "10": 1e-4,
                "5": 5e-5,
                "1": 1e-5,
                "0.1": 1e-6,
                "min": 0.0,
            },
            "per_token_kld": per_token,
            "ppl_ref": 6.1,
            "ppl_cand": 6.12,
            "chunks": 32,
            "ctx": 512,
        },
        "rniah": None
        if rniah is None
        else {
            "score": rniah,
            "n_cells": 9,
            "cells": cells,
            "base_acc_avg": 1.0 if rniah_confidence == "ok" else 0.1,
            "confidence": rniah_confidence,
            "password_keyword": "APRICOT-7-BLUE",
        },
        "plad": None
        if plad is None
        else {
            "score": plad,
            "per_perturbation_score": {"typo": 90.0, "case": 95.0, "punct": 89.0, "paraphrase": 91},
            "per_prompt": [
                {
                    "prompt_id": "p-001",
                    "perturbation": "typo",
                    "perturbed_prompt": "Prmopt number 1",
                    "ref_drift": 0.1,
                    "cand_drift": 0.3,
                    "excess_drift": 0.2,
                    "plad_pp": 100 * math.exp(-1.0),
                }
            ],
            "n_prompts": 12,
            "confidence": "ok",
        },
    }


def uncertain_axes() -> dict[str, dict[str, Any] | None]:
    """:func:`make_axes` whose Trajectory, KLD and R-NIAH scores are those of their own units
    (12 prompts, 32 chunks, 9 cells), so a report's ``uncertainty`` block gives each an
    interval (PLAD's single cell is held at its score). Its composite, 86.6, is PASS but not
    decided at 95 % (72 % PASS, 18 % EXCELLENT, 10 % DEGRADED)."""
    axes = make_axes(rniah=100.0 * (1 - 1 / 9))
    gtm, kld = axes["gtm"], axes["kld"]
    assert gtm is not None and kld is not None
    rows = gtm["per_prompt"]
    gtm["score"] = 100.0 * sum(p["prefix_agreement_length"] for p in rows) / sum(
        max(p["ref_length"], p["cand_length"]) for p in rows)
    chunks = np.random.default_rng(1).gamma(2.0, 0.0015, size=32)
    kld.update(per_chunk_kld=chunks.tolist(), mean_kld=float(chunks.mean()),
               score=100.0 * math.exp(-float(chunks.mean())))
    return axes


def make_report(**kw: Any) -> dict[str, Any]:
    model = kw.pop("model", "/models/demo-Q8_0.gguf")
    return build_report(
        model=model,
        reference="ctk=f16,ctv=f16",
        candidate=kw.pop("candidate", "ctk=q8_0,ctv=q4_0"),
        axes=kw.pop("axes", make_axes()),
        model_info={"n_params": 123, "n_ctx_train": 32768},
        environment={"llama_cpp_commit": "abc1234", "device": "CPU"},
        timings={"total_s": 12.5, "kld_s": 3.25},
        repro_command=["refract", "score", "--model", model],
        notes=["a run note"],
        **kw,
    )


# ------------------------------------------------------------------------------ build


PROV = {
    "model": {"path": "/models/demo-Q8_0.gguf", "sha256": "a" * 64, "bytes": 10},
    "corpus": {"path": "/c/wiki.test.raw", "name": "wikitext-2-raw-v1 test", "sha256": "b" * 64,
               "bytes": 1290590},
    "haystack": {"path": "/c/wiki.train.raw", "name": "custom", "sha256": "c" * 64, "bytes": 5},
    "prompts": {"source": "bundled", "sha256": "d" * 64, "n": 12},
}
SETTINGS = {"axes": ["gtm", "kld", "rniah", "plad"], "sequential": False, "chunks": 32,
            "ctx": 512, "n_predict": 40, "seed": 42, "chat_template": False,
            "rniah_up_to": 16384, "rniah_lengths": None, "rniah_positions": [0.1, 0.5, 0.9],
            "rniah_trials": 1, "rniah_n_predict": 256}


def verified_report(**kw: Any) -> dict[str, Any]:
    prov = kw.pop("provenance", PROV)
    settings = kw.pop("settings", SETTINGS)
    return make_report(provenance=prov, settings=settings, **kw)


def model_report(name: str, sha: str, **kw: Any) -> dict[str, Any]:
    prov = dict(PROV, model={"path": f"/m/{name}.gguf", "sha256": sha * 64, "bytes": 1})
    return verified_report(model=f"/m/{name}.gguf", provenance=prov, **kw)


def write_all(d: Path, reports: dict[str, dict[str, Any]]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, rep in reports.items():
        write_report(rep, d / f"{name}.json")
    return d
