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
