"""The engine foundation: model loading, info, tokens, KV configs, corpus KLD (Axis B)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import attnrot
from conftest import shared_file
from refract import Engine, KVConfig, _core
from refract.engine.facade import build_info
from refract.kvconfig import KVConfigError
from tinymodel import write_tiny_model

TEXT = (
    "The capital of France is Paris. The big ocean is blue and the small city is quick. "
    "Two plus two equals four, and seven is a rare number in this article. "
) * 60


def test_model_info_and_build_info(tiny_engine: Engine) -> None:
    info = tiny_engine.model_info
    assert info["architecture"] == "llama"
    assert info["n_layer"] == 2 and info["n_head"] == 2 and info["head_dim_k"] == 128
    assert info["n_ctx_train"] == 4096 and info["add_bos"] is True
    assert info["n_vocab"] > 256 and info["n_params"] > 0 and info["file_size"] > 0
    assert info["has_chat_template"] is False
    b = tiny_engine.build_info
    assert len(b["llama_cpp_commit"]) >= 7 and "CPU" in b["backends"]
    kv = tiny_engine.kv_types()
    assert {"f16", "q8_0", "q4_0"} <= set(kv)
    assert not any(t.startswith("q4_K") for t in kv)  # ggml types that are not KV types


def test_tokenize_roundtrip(tiny_engine: Engine) -> None:
    ids = tiny_engine.tokenize("Hello world, 42!")
    assert ids.dtype == np.int32 and ids[0] == tiny_engine.model_info["bos"]
    assert tiny_engine.detokenize(ids[1:]) == "Hello world, 42!"
    no_bos = tiny_engine.tokenize("Hello", add_special=False)
    assert no_bos[0] != tiny_engine.model_info["bos"]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tiny_engine.detokenize([10**7])


def test_ref_vs_ref_is_exactly_zero(tiny_engine: Engine) -> None:
    [res] = tiny_engine.kld(TEXT, candidates=["ctk=f16,ctv=f16"], ctx=128, chunks=3)
    assert res.mean_kld == 0.0 and res.score == 100.0
    assert res.same_top_p_pct == 100.0 and res.rms_dp_pct == 0.0
    assert res.ppl_ref == res.ppl_cand and res.mean_ln_ppl_ratio == 0.0
    assert (res.kld == 0.0).all()


def test_quantized_candidates_diverge(tiny_engine: Engine) -> None:
    q8, q4 = tiny_engine.kld(
        TEXT, candidates=["ctk=q8_0,ctv=q8_0", "ctk=q4_0,ctv=q4_0"], ctx=128, chunks=3
    )
    assert q8.candidate == "ctk=q8_0,ctv=q8_0" and q4.candidate == "ctk=q4_0,ctv=q4_0"
    assert q8.mean_kld > 0 and q4.mean_kld > q8.mean_kld
    assert 0 < q4.score < q8.score < 100
    lo, hi = q4.kld_ci95
    assert lo <= q4.mean_kld <= hi and q4.kld_se > 0
    assert q4.percentiles["min"] <= q4.percentiles["median"] <= q4.percentiles["max"]
    assert q4.kld.dtype == np.float64 and q4.kld.size == 3 * 63
    assert q4.dp.shape == q4.kld.shape and q4.same_top1.dtype == bool
    # the per-token values agree with the summary
    assert q4.mean_kld == pytest.approx(float(q4.kld.mean()), rel=1e-12)
    assert q4.same_top_p_pct == pytest.approx(100 * q4.same_top1.mean())
    allocs = tiny_engine.kv_allocations()
    assert allocs["ctk=q4_0,ctv=q4_0"][0]["type_k"] == "q4_0"
    assert allocs["ctk=q4_0,ctv=q4_0"][0]["layers"] == 2


def test_token_ids_corpus_matches_text(tiny_engine: Engine) -> None:
    ids = tiny_engine.tokenize(TEXT)
    [a] = tiny_engine.kld(TEXT, candidates=["ctk=q8_0,ctv=q8_0"], ctx=128, chunks=2)
    [b] = tiny_engine.kld(ids, candidates=["ctk=q8_0,ctv=q8_0"], ctx=128, chunks=2)
    np.testing.assert_array_equal(a.kld, b.kld)


def test_chunking_matches_llama_perplexity(tiny_engine: Engine) -> None:
    assert _core.chunk_plan(100_000, 512, 32) == (32, 256, 510)  # 255 scored per window
    assert _core.chunk_plan(3 * 512 + 100, 512, 32) == (3, 256, 510)  # capped by corpus
    assert _core.chunk_plan(1000, 128, 4) == (4, 64, 126)
    with pytest.raises(ValueError, match="511 tokens"):
        _core.chunk_plan(511, 512, 1)
    n_tok = tiny_engine.tokenize(TEXT).size
    [res] = tiny_engine.kld(TEXT, candidates=["ctk=q8_0,ctv=q8_0"], ctx=256, chunks=1000)
    assert res.n_chunks == n_tok // 256 and res.scored_per_chunk == 127
    assert res.n_scored == res.n_chunks * 127
    with pytest.raises(ValueError, match="tokens"):
        tiny_engine.kld("too short", candidates=["ctk=q8_0,ctv=q8_0"], ctx=128)


def test_first_token_of_each_window_is_bos(tiny_engine: Engine) -> None:
    # windows are scored only from ctx/2, so the BOS swap must not change scored positions'
    # inputs except through context: compare against compare_sequence on the window itself
    ids = tiny_engine.tokenize(TEXT)
    [res] = tiny_engine.kld(ids, candidates=["ctk=q4_0,ctv=q4_0"], ctx=128, chunks=2)
    win = ids[128:256].copy()
    win[0] = tiny_engine.model_info["bos"]
    [rows] = tiny_engine.compare_sequence(
        win, "ctk=f16,ctv=f16", ["ctk=q4_0,ctv=q4_0"], first=64, last=126, ctx=128
    )
    np.testing.assert_array_equal(rows["kld"], res.kld[63:])


# ----------------------------------------------------------------- bad input


@pytest.fixture()
def bad_files(tmp_path: Path, tiny_model: Path) -> dict[str, Path]:
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    rnd = tmp_path / "random.gguf"
    rnd.write_bytes(os.urandom(4096))
    trunc = tmp_path / "truncated.gguf"
    trunc.write_bytes(tiny_model.read_bytes()[:50_000])
    header_only = tmp_path / "header.gguf"
    header_only.write_bytes(b"GGUF" + os.urandom(64))
    return {"empty": empty, "random": rnd, "truncated": trunc, "header": header_only,
            "dir": tmp_path, "missing": tmp_path / "nope.gguf"}


@pytest.mark.parametrize(
    "which,msg",
    [("missing", "not found"), ("dir", "directory"), ("empty", "empty"),
     ("random", "not a GGUF"), ("truncated", "could not load"), ("header", "could not load")],
)
def test_bad_model_files_raise_clear_errors(bad_files, which: str, msg: str) -> None:
    path = bad_files[which]
    with pytest.raises(ValueError, match=msg) as ei:
        Engine(path)
    assert str(path) in str(ei.value) or which in ("truncated", "header")


@pytest.mark.parametrize(
    "kv,msg",
    [("ctk=q9_9", "unknown K type 'q9_9'.*q8_0"), ("ctk=f16,ctv=nope", "unknown V type 'nope'"),
     ("ctk=q4_K", "not a KV cache type"), ("ctk", "no '='"), ("foo=1", "unknown KV config key"),
     ("attn_rot_k=yes", "integer")],
)
def test_bad_kv_configs(tiny_engine: Engine, kv: str, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        tiny_engine.kld(TEXT, candidates=[kv], ctx=128, chunks=1)


def test_block_size_must_divide_head_dim(tmp_path: Path) -> None:
    odd = write_tiny_model(tmp_path / "hd48.gguf", head_dim=48)
    with Engine(odd) as eng:
        with pytest.raises(ValueError, match="block size 32.*head dim 48"):
            eng.kld(TEXT, candidates=["ctk=q8_0,ctv=f16"], ctx=128, chunks=1)


@pytest.mark.parametrize("ctx", [0, -5, 8192])
def test_bad_ctx(tiny_engine: Engine, ctx: int) -> None:
    with pytest.raises(ValueError, match=str(ctx)):
        tiny_engine.kld(TEXT, candidates=["ctk=q8_0,ctv=q8_0"], ctx=ctx, chunks=1)


def test_kvconfig_labels() -> None:
    assert KVConfig.parse(" ctv=q4_0 , ctk=q8_0,, ").label == "ctk=q8_0,ctv=q4_0"
    assert KVConfig.parse("").label == "ctk=f16,ctv=f16"
    c = KVConfig.parse("attn_rot_disable=1,ctk=q8_0,attn_rot_k=0")
    assert c.label == "ctk=q8_0,ctv=f16,attn_rot_k=0,attn_rot_disable=1"
    assert c.env() == {"LLAMA_ATTN_ROT_K_OVERRIDE": "0", "LLAMA_ATTN_ROT_DISABLE": "1"}
    with pytest.raises(KVConfigError):
        KVConfig.parse("ctk=")


# ----------------------------------------------------------------- real model


def test_demo_model_kld_on_wikitext(demo_engine: Engine) -> None:
    text = shared_file("wikitext-2-test.txt").read_text(encoding="utf-8")
    q8, q4 = demo_engine.kld(
        text, candidates=["ctk=q8_0,ctv=q8_0", "ctk=q4_0,ctv=q4_0"], ctx=512, chunks=4
    )
    assert q8.n_scored == 4 * 255
    assert 0 < q8.mean_kld < q4.mean_kld
    assert q8.score > 95 and q8.same_top_p_pct > 90
    assert 1 < q8.ppl_ref < 200 and q8.ppl_ref == pytest.approx(q4.ppl_ref)


def test_attn_rot_switches_apply_to_their_context_only(
    tiny_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The switch that changes a plain q8_0 cache depends on the linked llama.cpp (see
    # tests/attnrot.py): upstream rotates by default and attn_rot_disable=1 turns that off,
    # the TurboQuant fork does not and attn_rot_k=1,attn_rot_v=1 turn it on.
    assert not any(key in os.environ for key in attnrot.ENV)
    default = attnrot.default_q8_rotation(tiny_model, TEXT)
    flavour = build_info()["llama_cpp_flavour"]
    assert default == attnrot.DEFAULT_BY_FLAVOUR.get(flavour, default), flavour
    switch, switched_rot = attnrot.flip_switch(default)
    cand = f"ctk=q8_0,ctv=q8_0,{switch}"
    tiny_engine = Engine(tiny_model, n_threads=2)  # fresh: its contexts are created here
    caplog.clear()  # not the lines of default_q8_rotation's engine
    with caplog.at_level("DEBUG", logger="refract.llama"):
        [switched] = tiny_engine.kld(TEXT, candidates=[cand], ctx=128, chunks=1)
    assert switched.candidate == cand
    lines = [r.getMessage() for r in caplog.records]
    # llama.cpp saw the switch while creating that context ...
    assert attnrot.q8_rotation(lines) == switched_rot != default
    # (upstream says so; the fork's overrides are silent)
    assert any(attnrot.FORCE_DISABLED in m for m in lines) == (switch == "attn_rot_disable=1")
    # ... and it is gone again afterwards
    assert not any(key in os.environ for key in attnrot.ENV)
    caplog.clear()
    with caplog.at_level("DEBUG", logger="refract.llama"):
        [plain] = tiny_engine.kld(TEXT, candidates=["ctk=q8_0,ctv=q8_0"], ctx=128, chunks=1)
    lines = [r.getMessage() for r in caplog.records]
    assert attnrot.q8_rotation(lines) == default
    assert not any(attnrot.FORCE_DISABLED in m for m in lines)
    assert plain.mean_kld != switched.mean_kld  # rotation changes what q8_0 does
    tiny_engine.close()


def test_attn_rot_keys_the_linked_llama_cpp_does_not_act_on(tiny_model: Path) -> None:
    # What the other flavour's switches do here (tests/attnrot.py): upstream does not read the
    # per-side overrides; on the fork attn_rot_disable=1 only locks the overrides out.
    default = attnrot.default_q8_rotation(tiny_model, TEXT)
    inert = ("attn_rot_k=0,attn_rot_v=0" if default == (1, 1)
             else "attn_rot_k=1,attn_rot_v=1,attn_rot_disable=1")  # fmt: skip
    with Engine(tiny_model, n_threads=2) as eng, attnrot.llama_log() as lines:
        plain, other = eng.kld(TEXT, candidates=["ctk=q8_0,ctv=q8_0", f"ctk=q8_0,ctv=q8_0,{inert}"],
                               ctx=128, chunks=1)  # fmt: skip
    q8 = [(k, v) for tk, tv, k, v in attnrot.cache_rotations(lines) if tk == tv == "q8_0"]
    assert q8 == [default, default]  # both contexts created, neither one changed
    assert other.mean_kld == plain.mean_kld


def test_fork_switches_pinned_unless_user_set(tiny_engine: Engine) -> None:
    assert tiny_engine.fork_switches == {"TURBO_AUTO_ASYMMETRIC": "0", "TURBO_LAYER_ADAPTIVE": "0"}
    assert os.environ["TURBO_LAYER_ADAPTIVE"] == "0"


def test_fork_switch_set_by_user_is_kept(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURBO_LAYER_ADAPTIVE", "1")
    with Engine(tiny_model) as eng:
        assert eng.fork_switches["TURBO_LAYER_ADAPTIVE"] == "1"
        assert eng.fork_switches["TURBO_AUTO_ASYMMETRIC"] == "0"


def test_per_token_arrays_are_views_of_engine_buffers(tiny_engine: Engine) -> None:
    [res] = tiny_engine.kld(TEXT, candidates=["ctk=q8_0,ctv=q8_0"], ctx=128, chunks=2)
    for arr in (res.kld, res.dp, res.same_top1, res.logp_ref):
        assert not arr.flags.owndata  # owned by the C++ result, not copied into Python


@pytest.mark.parametrize("group", [1, 2, 3])
def test_bench_decode_counts_every_group(tiny_engine: Engine, group: int) -> None:
    """The benchmarks' floor decodes every prompt and every generation step, in groups of any
    size (groups smaller than the prompt count once failed: the last generation step of one
    group led the next group's prefill)."""
    prompts = [tiny_engine.prompt_ids(s) for s in ("one two", "three four five", "six")]
    n_gen = [5, 3, 4]
    out = tiny_engine.bench_decode(prompts, "ctk=f16,ctv=f16", n_gen, ctx=64, group=group)
    assert out["prompt_tokens"] == sum(int(p.size) for p in prompts)
    # the first generated token comes from the prefill; each later one is one decoded token
    assert out["decoded_tokens"] == sum(n - 1 for n in n_gen)
    assert out["prefill_s"] >= 0 and out["decode_s"] >= 0
