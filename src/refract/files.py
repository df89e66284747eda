"""Files refract writes: atomic replacement, checks on output paths, file-name forms; and the
reading of a text input file the user names.

The one home of each: every file refract writes goes through :func:`atomic_output` (a
temporary file in the target's directory, renamed over the target only once it is whole, so
a failure or Ctrl-C never leaves a half-written file that looks complete); every output path
is checked by :func:`check_output_path` / :func:`check_out_dir` before any work starts; every
report's file name comes from :func:`report_stem`; a corpus or prompt-set file is read by
:func:`read_input_bytes`.

This module sits at the bottom of the import graph: it imports nothing from refract but
:mod:`refract.errors`.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from refract.errors import RefractError, UsageError

__all__ = [
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_out_dir",
    "check_output_path",
    "check_outputs_distinct",
    "read_input_bytes",
    "report_stem",
    "scratch_file",
    "slug",
]


# --------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def scratch_file(directory: str | os.PathLike[str], *, prefix: str = ".refract-",
                 suffix: str = "") -> Iterator[Path]:
    """A new empty file in ``directory`` (mode 0600), removed on exit if it is still there."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
    os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, suffix: str = ".tmp",
                  durable: bool = True) -> Iterator[Path]:
    """Write ``path`` atomically: yields a temporary file beside it to fill.

    On a clean exit the temporary file gets the permissions a new file would (the umask's,
    not ``mkstemp``'s 0600) and is renamed over ``path`` (``os.replace``); with ``durable``
    the file and its directory are fsync'ed. On any exception it is removed and an existing
    ``path`` is left untouched. Nest several to replace files together only once all of them
    are whole.
    """
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    with scratch_file(parent, prefix=f".{target.name}.", suffix=suffix) as tmp:
        yield tmp
        if durable:
            _fsync_file(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    if durable:
        _fsync_dir(parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *,
                       durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`); returns ``path``."""
    target = Path(path)
    with atomic_output(target, durable=durable) as tmp:
        tmp.write_bytes(data)
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str, *, durable: bool = True) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_output`)."""
    return atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


# --------------------------------------------------------------------------- output paths


def _check_writable_dir(directory: Path, what: str, shown: Path) -> None:
    """``directory`` takes a new file: one is created and removed, so read-only mounts,
    /proc and /sys are found even as root (the message names the user's path)."""
    try:
        with scratch_file(directory, prefix=".refract-probe-"):
            pass
    except OSError as exc:
        raise UsageError(
            f"{what} {str(shown)!r}: cannot write in {str(directory)!r} ({exc.strerror or exc})"
        ) from None


def check_output_path(path: str | os.PathLike[str], what: str) -> Path:
    """An output file whose directory exists and can take a new file (checked before work)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise UsageError(f"{what} {str(p)!r} is a directory, expected a file path")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise UsageError(f"{what} {str(p)!r}: directory {str(parent)!r} does not exist")
    if not parent.is_dir():
        raise UsageError(f"{what} {str(p)!r}: {str(parent)!r} is not a directory")
    if p.exists() and not p.is_file():
        raise UsageError(f"{what} {str(p)!r} exists and is not a regular file")
    if p.exists() and not os.access(p, os.W_OK):
        raise UsageError(f"{what} {str(p)!r} exists and is not writable")
    _check_writable_dir(parent, what, p)
    return p


def check_out_dir(path: str | os.PathLike[str], what: str = "--out-dir") -> Path:
    """An output directory that exists (created, parents included, if missing) and takes new
    files; returns it."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise UsageError(f"{what} {str(p)!r} exists and is not a directory")
    if not p.exists():
        parent = p.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise UsageError(f"{what} {str(p)!r}: cannot create it ({str(parent)!r} is not a "
                             "directory)")
        _check_writable_dir(parent, what, p)
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{what} {str(p)!r}: cannot create it "
                             f"({exc.strerror or exc})") from None
    _check_writable_dir(p, what, p)
    return p


def check_outputs_distinct(
    outputs: Mapping[str, Path | None], inputs: Mapping[str, Path | None]
) -> None:
    """No output may be an input (model, corpus, ...) or another output."""
    seen: dict[Path, str] = {}
    for what, path in inputs.items():
        if path is not None:
            seen.setdefault(_real(path), what)
    outs: dict[Path, str] = {}
    for what, path in outputs.items():
        if path is None:
            continue
        real = _real(path)
        if real in seen:
            raise UsageError(
                f"{what} {str(path)!r} is the {seen[real]}: refusing to overwrite an input"
            )
        if real in outs:
            raise UsageError(f"{what} {str(path)!r} is also given as {outs[real]}")
        outs[real] = what


def _real(path: Path) -> Path:
    try:
        return Path(os.path.realpath(path))
    except OSError:
        return Path(os.path.abspath(path))


# --------------------------------------------------------------------------- file names


def slug(text: str) -> str:
    """A file-name-safe form: ``Mistral-Small 24B`` → ``mistral-small-24b``."""
    s = re.sub(r"[^A-Za-z0-9._+-]+", "-", text.strip().lower()).strip("-.")
    return s or "x"


def report_stem(model: str, candidate: str) -> str:
    """A report's file name without its suffix: ``<model-slug>__<candidate-slug>``.

    ``model`` is the name the model goes by (a matrix's ``[[models]] name``, else the model
    file's stem); ``candidate`` a KV config label (``ctk=q8_0,ctv=q8_0`` →
    ``ctk-q8_0_ctv-q8_0``).
    """
    return f"{slug(model)}__{slug(candidate.replace('=', '-').replace(',', '_'))}"


# --------------------------------------------------------------------------- input files


def read_input_bytes(path: Path, what: str, expected: str, error: type[RefractError]) -> bytes:
    """The bytes of the input file ``path`` (``what``: ``corpus``, ``prompt set``); a missing
    path, a directory (``expected``: what it should have been) or a failed read is ``error``
    with one line naming the file."""
    if not path.exists():
        raise error(f"{what} {path}: file not found")
    if path.is_dir():
        raise error(f"{what} {path}: is a directory, expected {expected}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise error(f"{what} {path}: cannot read: {exc.strerror or exc}") from None


_SWEEP_HEAD = re.compile(rb'\s*\{\s*"schema"\s*:\s*"refract-sweep/')


def is_sweep_summary(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` opens as a ``refract sweep`` summary (``sweep.json``) does."""
    try:
        with open(path, "rb") as fh:
            return _SWEEP_HEAD.match(fh.read(256)) is not None
    except OSError:
        return False
