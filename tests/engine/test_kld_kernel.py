"""The fused KLD kernel against a float64 numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from refract import _core


def reference(ref: np.ndarray, cand: np.ndarray, nxt: np.ndarray) -> dict[str, np.ndarray]:
    r = ref.astype(np.float64)
    c = cand.astype(np.float64)
    lr = r - r.max(axis=1, keepdims=True)
    lr -= np.log(np.exp(lr).sum(axis=1, keepdims=True))
    lc = c - c.max(axis=1, keepdims=True)
    lc -= np.log(np.exp(lc).sum(axis=1, keepdims=True))
    pr = np.exp(lr)
    rows = np.arange(len(r))
    return {
        "kld": (pr * (lr - lc)).sum(axis=1),
        "logp_ref": lr[rows, nxt],
        "logp_cand": lc[rows, nxt],
        "dp": np.exp(lc[rows, nxt]) - np.exp(lr[rows, nxt]),
        "argmax_ref": r.argmax(axis=1),
        "argmax_cand": c.argmax(axis=1),
        "rank_ref": (r > r[rows, nxt][:, None]).sum(axis=1),
    }


def make_case(rng: np.random.Generator, rows: int, vocab: int, scale: float, noise: float):
    ref = (rng.standard_normal((rows, vocab)) * scale).astype(np.float32)
    cand = (ref + rng.standard_normal((rows, vocab)) * noise).astype(np.float32)
    nxt = rng.integers(0, vocab, rows).astype(np.int32)
    return ref, cand, nxt


@pytest.mark.parametrize(
    "scale,noise",
    [(1.0, 1.0), (3.0, 0.05), (40.0, 5.0), (1000.0, 50.0)],  # incl. large magnitudes
)
def test_matches_float64_reference(scale: float, noise: float) -> None:
    rng = np.random.default_rng(7)
    ref, cand, nxt = make_case(rng, 37, 5003, scale, noise)
    got = _core.kld_rows(ref, cand, nxt, 2)
    want = reference(ref, cand, nxt)
    np.testing.assert_allclose(got["kld"], want["kld"], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(got["logp_ref"], want["logp_ref"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(got["logp_cand"], want["logp_cand"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(got["dp"], want["dp"], rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(got["argmax_ref"], want["argmax_ref"])
    np.testing.assert_array_equal(got["argmax_cand"], want["argmax_cand"])
    np.testing.assert_array_equal(got["rank_ref"], want["rank_ref"])


def test_one_dominant_logit_rows() -> None:
    rng = np.random.default_rng(3)
    ref, cand, nxt = make_case(rng, 8, 4096, 1.0, 0.3)
    ref[:, 17] = 60.0  # one token takes almost all the mass
    cand[:, 17] = 55.0
    cand[:4, 99] = 58.0  # ... or loses it to another
    got = _core.kld_rows(ref, cand, nxt)
    want = reference(ref, cand, nxt)
    np.testing.assert_allclose(got["kld"], want["kld"], rtol=1e-6, atol=1e-15)
    assert (got["argmax_ref"] == 17).all()
    assert list(got["same_top1"][:4]) == [0, 0, 0, 0] and got["same_top1"][4:].all()


def test_identical_rows_give_exactly_zero() -> None:
    rng = np.random.default_rng(0)
    ref = (rng.standard_normal((5, 1000)) * 10).astype(np.float32)
    got = _core.kld_rows(ref, ref.copy())
    assert (got["kld"] == 0.0).all()
    assert got["same_top1"].all()
    assert (got["rank_ref"] == -1).all()  # no next tokens given


def test_ties_break_to_lowest_id() -> None:
    ref = np.zeros((1, 10), dtype=np.float32)
    ref[0, [3, 7]] = 5.0
    got = _core.kld_rows(ref, ref.copy())
    assert got["argmax_ref"][0] == 3


Z24 = np.zeros((2, 4), np.float32)


@pytest.mark.parametrize(
    "ref,cand,nxt,msg",
    [
        (np.zeros((2, 4), np.float64), np.zeros((2, 4), np.float32), None, "float32"),
        (np.zeros((2, 4), np.float32), np.zeros((3, 4), np.float32), None, "same shape"),
        (np.zeros(4, np.float32), np.zeros(4, np.float32), None, "2-D"),
        (np.zeros((4, 4), np.float32)[:, ::2], np.zeros((4, 2), np.float32), None, "contiguous"),
        (Z24, Z24, np.array([0], np.int32), "one id"),
        (Z24, Z24, np.array([0, 9], np.int32), "range"),
    ],
)
def test_bad_shapes_and_dtypes_raise_value_error(ref, cand, nxt, msg) -> None:
    with pytest.raises(ValueError, match=msg):
        _core.kld_rows(ref, cand, nxt)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("side", ["ref", "cand"])
def test_nonfinite_rows_are_flagged_and_nan_never_a_score(value: float, side: str) -> None:
    rng = np.random.default_rng(11)
    ref, cand, nxt = make_case(rng, 6, 5003, 2.0, 0.2)
    clean = _core.kld_rows(ref, cand, nxt, 2)
    (ref if side == "ref" else cand)[2, 4000] = value  # a later block of the row
    (ref if side == "ref" else cand)[4, 0] = value
    got = _core.kld_rows(ref, cand, nxt, 2)
    bad = np.zeros(6, bool)
    bad[[2, 4]] = True
    other = "cand" if side == "ref" else "ref"
    for key in ("kld", "dp", "logp_ref", "logp_cand"):
        assert np.isnan(got[key][bad]).all(), key
        np.testing.assert_array_equal(got[key][~bad], clean[key][~bad])
    np.testing.assert_array_equal(got[f"nonfinite_{side}"].astype(bool), bad)
    assert not got[f"nonfinite_{other}"].any()
    assert (got[f"n_nonfinite_{side}"], got[f"n_nonfinite_{other}"]) == (2, 0)
    assert (got[f"argmax_{side}"][bad] == -1).all() and (got[f"rank_{side}"][bad] == -1).all()
    np.testing.assert_array_equal(got[f"argmax_{other}"], clean[f"argmax_{other}"])
    assert not got["same_top1"][bad].any()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_identical_nonfinite_rows_are_not_a_perfect_match(value: float) -> None:
    ref = np.random.default_rng(2).standard_normal((2, 300)).astype(np.float32)
    ref[1, 150] = value
    got = _core.kld_rows(ref, ref.copy())
    assert got["kld"][0] == 0.0 and np.isnan(got["kld"][1])
    assert list(got["nonfinite_ref"]) == [0, 1] and list(got["nonfinite_cand"]) == [0, 1]


def test_all_minus_inf_reference_row_is_flagged() -> None:
    ref = np.full((1, 64), -np.inf, np.float32)
    cand = np.zeros((1, 64), np.float32)
    got = _core.kld_rows(ref, cand)
    assert np.isnan(got["kld"][0]) and got["n_nonfinite_ref"] == 1 and got["n_nonfinite_cand"] == 0


def test_running_maximum_across_blocks() -> None:
    """The one-pass log-sum-exp rescales when a later block raises the maximum."""
    v = 9001
    ramp = np.linspace(-30.0, 30.0, v, dtype=np.float32)
    rng = np.random.default_rng(5)
    ref = np.stack([ramp, ramp[::-1], rng.standard_normal(v).astype(np.float32) * 4])
    ref[2, [100, 7000]] = 50.0  # the same maximum in two blocks: argmax is the lower id
    cand = (ref + rng.standard_normal(ref.shape) * 0.3).astype(np.float32)
    nxt = np.array([v - 1, 0, 7000], np.int32)
    got = _core.kld_rows(ref, cand, nxt)
    want = reference(ref, cand, nxt)
    np.testing.assert_allclose(got["kld"], want["kld"], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(got["logp_ref"], want["logp_ref"], rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(got["argmax_ref"], [v - 1, 0, 100])
    np.testing.assert_array_equal(got["rank_ref"], want["rank_ref"])


def test_large_vocab_matches_float64_reference() -> None:
    rng = np.random.default_rng(9)
    ref, cand, nxt = make_case(rng, 3, 262_144, 3.0, 0.02)  # KLD ~2e-4: cancellation matters
    got = _core.kld_rows(ref, cand, nxt, 2)
    want = reference(ref, cand, nxt)
    np.testing.assert_allclose(got["kld"], want["kld"], rtol=1e-6, atol=0)
    np.testing.assert_allclose(got["dp"], want["dp"], rtol=1e-6, atol=1e-15)
