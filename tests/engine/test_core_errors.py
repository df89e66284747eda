"""The native engine's errors arrive as refract.errors classes: the C++ ``UsageError`` as
:class:`refract.errors.UsageError` (a ``ValueError``), the C++ ``EngineError`` as
:class:`refract.errors.EngineError` (a ``RuntimeError``), translated in ``refract._core``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from refract import _core, errors


@pytest.fixture(scope="module")
def model(tiny_model: Path) -> _core.Model:
    return _core.Model(str(tiny_model), n_threads=2)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: _core.type_row_size("f16", -1), "n must be >= 0"),
        (lambda: _core.type_row_size("no_such_type", 1), "no_such_type"),
        (lambda: _core.chunk_plan(511, 512, 1), "511 tokens"),
        (lambda: _core.chunk_plan(100_000, 2, 1), "ctx must be at least 4"),
    ],
)
def test_usage_error_without_a_model(call: Callable[[], object], match: str) -> None:
    with pytest.raises(errors.UsageError, match=match) as ei:
        call()
    assert type(ei.value) is errors.UsageError
    # callers catching the builtin base keep working
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, errors.RefractError)
    assert not isinstance(ei.value, RuntimeError)


def test_usage_error_from_a_model_call(model: _core.Model) -> None:
    with pytest.raises(errors.UsageError, match="outside the vocabulary") as ei:
        model.detokenize(np.array([10**7], dtype=np.int32))
    assert type(ei.value) is errors.UsageError and isinstance(ei.value, ValueError)
    kv = _core.KV("f16", "f16", {}, "f16")
    with pytest.raises(errors.UsageError, match="n_predict must be >= 1"):
        model.greedy(kv, [model.tokenize("hello world")], 0, 64)


def test_engine_error_from_a_model_call(model: _core.Model) -> None:
    # a progress callback calling back into the model it reports on: the engine refuses with
    # its EngineError (raised inside the callback, re-raised by the outer call as it is)
    def progress(done: int, total: int) -> None:
        model.tokenize("hello")

    kv = _core.KV("f16", "f16", {}, "f16")
    with pytest.raises(errors.EngineError, match="re-entrant call") as ei:
        model.greedy(kv, [model.tokenize("hello world")], 4, 64, progress=progress)
    assert type(ei.value) is errors.EngineError
    assert isinstance(ei.value, RuntimeError) and isinstance(ei.value, errors.RefractError)
    assert not isinstance(ei.value, ValueError)
    assert model.tokenize("hello").size > 0  # not left locked
