"""The model argument: ``demo`` or a GGUF file, checked before llama.cpp sees it.

:func:`check_model_file` is the one check of a model file (the engine runs it on every load,
the score's plan before anything else): it exists, is a regular readable non-empty file, starts
with the GGUF magic, and has no zero-dimension tensor (:func:`refract.inputs.gguf.zero_dim_tensor`:
the TurboQuant fork's loader dies of SIGFPE on one). Every refusal is a :class:`ModelError`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from refract.defaults import DEMO
from refract.errors import ModelError, UsageError
from refract.inputs.gguf import zero_dim_tensor

__all__ = ["check_model_file", "resolve_model"]


def check_model_file(path: str | os.PathLike[str], shown: str | None = None) -> Path:
    """``path`` as a :class:`Path` if it can be a model; else a one-line :class:`ModelError`
    naming ``shown`` (what the user wrote; default: the path)."""
    p = Path(path).expanduser()
    name = repr(shown if shown is not None else str(p))
    if not p.exists():
        raise ModelError(f"model file not found: {name}")
    if p.is_dir():
        raise ModelError(f"model path is a directory, not a GGUF file: {name}")
    if not stat.S_ISREG(p.stat().st_mode):
        raise ModelError(f"model path is not a regular file (a pipe or device?): {name}")
    try:
        with p.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read model file {name}: {exc.strerror or exc}") from None
    if not magic:
        raise ModelError(f"model file is empty: {name}")
    if magic != b"GGUF":
        raise ModelError(f"not a GGUF file (magic {magic!r}, expected b'GGUF'): {name}")
    empty = zero_dim_tensor(p)
    if empty is not None:
        tensor, shape = empty
        raise ModelError(
            f"damaged GGUF file: tensor {tensor[:64]!r} has shape {list(shape)} (a zero "
            f"dimension; no model tensor is empty): {name}"
        )
    return p


def resolve_model(model: str | os.PathLike[str]) -> Path:
    """``demo`` → the demo model (the `demo` extra); anything else must be a GGUF file."""
    text = os.fspath(model)
    if not text.strip():
        raise UsageError("--model is empty")
    if text == DEMO and not Path(text).is_file():  # a file named "demo" wins
        from refract.inputs.demo import demo_model_path

        return demo_model_path()  # DemoUnavailable says how to install it
    return check_model_file(text, shown=text)
