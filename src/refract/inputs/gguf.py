"""A GGUF file's tensor shapes, read before llama.cpp parses the file.

llama.cpp's GGUF loader of the TurboQuant fork's era (upstream b8871, April 2026) divides by
a tensor's dimensions 1-3 while checking their product, so a damaged file with a zero there
kills the process with SIGFPE instead of failing the load (upstream has accepted zero-element
tensors since). No model tensor has a zero dimension: upstream refuses such a file later, when
the model's tensors are created. :func:`zero_dim_tensor` walks the metadata and the tensor
infos and names the first such tensor, so refract refuses the file on every llama.cpp.

The walk only ever answers for a file it could read up to that tensor: anything else it cannot
follow (a truncation, an unknown type, an absurd count) is left to llama.cpp's own checks,
which refuse those files cleanly.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

# GGUF value types → byte size of a scalar; 8 = string, 9 = array
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
_MAX_DIMS = 4  # GGML_MAX_DIMS
_U64 = struct.Struct("<Q")


class _Unreadable(Exception):
    """The walk cannot follow the file here (llama.cpp will say why)."""


class _Reader:
    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.size = len(buf)
        self.pos = 0

    def take(self, n: int) -> int:
        if n < 0 or n > self.size - self.pos:
            raise _Unreadable
        start = self.pos
        self.pos += n
        return start

    def u32(self) -> int:
        value: int = struct.unpack_from("<I", self.buf, self.take(4))[0]
        return value

    def u64(self) -> int:
        value: int = struct.unpack_from("<Q", self.buf, self.take(8))[0]
        return value

    def skip_string(self) -> None:
        self.take(self.u64())

    def string(self) -> str:
        n = self.u64()
        return self.buf[self.take(n) : self.pos].decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        # a vocabulary is a few hundred thousand strings: this loop is the walk's cost
        if count > (self.size - self.pos) // 8:  # each string has a u64 length
            raise _Unreadable
        buf, pos, end, unpack = self.buf, self.pos, self.size, _U64.unpack_from
        for _ in range(count):
            if pos + 8 > end:
                raise _Unreadable
            pos += 8 + unpack(buf, pos)[0]
        if pos > end:
            raise _Unreadable
        self.pos = pos

    def skip_value(self, vtype: int) -> None:
        if vtype in _SCALAR_SIZES:
            self.take(_SCALAR_SIZES[vtype])
        elif vtype == _STRING:
            self.skip_string()
        elif vtype == _ARRAY:
            etype, count = self.u32(), self.u64()
            if etype in _SCALAR_SIZES:
                if count > (self.size - self.pos) // _SCALAR_SIZES[etype]:
                    raise _Unreadable
                self.take(count * _SCALAR_SIZES[etype])
            elif etype == _STRING:
                self.skip_strings(count)
            else:  # arrays of arrays and unknown types: llama.cpp refuses them
                raise _Unreadable
        else:
            raise _Unreadable


def zero_dim_tensor(path: str | Path) -> tuple[str, tuple[int, ...]] | None:
    """The first tensor of GGUF file ``path`` with a zero dimension, as (name, shape); None
    where there is none or the file cannot be walked that far (see the module docstring)."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _walk(_Reader(buf))
    except (OSError, ValueError, _Unreadable):
        return None


def _walk(r: _Reader) -> tuple[str, tuple[int, ...]] | None:
    if bytes(r.buf[r.take(4) : r.pos]) != b"GGUF" or r.u32() not in (2, 3):
        return None  # v1 and byte-swapped files: llama.cpp refuses them itself
    n_tensors, n_kv = r.u64(), r.u64()
    for _ in range(n_kv):
        r.skip_string()
        r.skip_value(r.u32())
    for _ in range(n_tensors):
        name = r.string()
        n_dims = r.u32()
        if n_dims > _MAX_DIMS:
            return None
        shape = tuple(r.u64() for _ in range(n_dims))
        if 0 in shape:  # before the type: the era's loader divides right after the dims
            return name, shape
        r.take(4 + 8)  # type, data offset
    return None
