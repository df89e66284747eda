"""The CLI maps exceptions to exit codes by class (refract.errors), never by message text;
every error is one line on stderr (a traceback only with REFRACT_DEBUG=1)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import typer

from refract import errors
from refract.cli.app import guard

SRC = Path(__file__).resolve().parents[2] / "src" / "refract"


class _Check:
    message = "the ref-vs-ref floor is not clean"


CASES: list[tuple[BaseException, int, str]] = [
    (errors.UsageError("--chunks must be >= 1"), 2, "refract: error: --chunks must be >= 1"),
    (errors.ModelError("m.gguf: not a GGUF file"), 2, "refract: error: m.gguf: not a GGUF file"),
    (errors.ReportError("r.json: not a JSON file"), 2, "refract: error: r.json: not a JSON"),
    (errors.MemoryBudgetError("needs 9 GiB", needed=9, available=1), 2, "needs 9 GiB"),
    (errors.FloorFailed(_Check(), {}), 2, "refract: error: the ref-vs-ref floor is not clean"),
    (errors.EngineError("llama_decode failed"), 1, "refract: error: llama_decode failed"),
    (errors.NonFiniteLogits("q4", 3, 10, "KLD"), 1, "non-finite (NaN/inf) logits in 3 of 10"),
    (errors.CorpusError("could not download x"), 1, "refract: error: could not download x"),
    (errors.ReferenceInvalid("reference logits"), 1, "refract: error: reference logits"),
    (errors.Interrupted("stopped"), 130, "refract: error: interrupted"),
    (KeyboardInterrupt(), 130, "refract: error: interrupted"),
    (ImportError("CPU lacks AVX2", name="refract._core"), 1,
     "refract: error: the native engine cannot be loaded: CPU lacks AVX2"),
    (ModuleNotFoundError("No module named 'refract._core'", name="refract._core"), 1,
     "the native engine cannot be loaded"),
    (MemoryError(), 1, "refract: error: out of memory"),
    (PermissionError(13, "Permission denied"), 1, "refract: error: [Errno 13] Permission denied"),
    # builtin errors raised from deep inside are bugs, whatever their class
    (ValueError("bad shape"), 1, "refract: error: internal error: ValueError: bad shape"),
    (RuntimeError("boom"), 1, "refract: error: internal error: RuntimeError: boom"),
    (ModuleNotFoundError("No module named 'numpy'", name="numpy"), 1,
     "internal error: ModuleNotFoundError"),
    (KeyError("x"), 1, "refract: error: internal error: KeyError"),
]


@pytest.mark.parametrize(("exc", "code", "line"), CASES, ids=lambda v: type(v).__name__)
def test_guard_maps_classes_to_exit_codes(
    exc: BaseException, code: int, line: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("REFRACT_DEBUG", raising=False)
    with pytest.raises(typer.Exit) as info, guard():
        raise exc
    assert info.value.exit_code == code
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and line in err, err
    if "internal error" in line:
        assert "REFRACT_DEBUG=1" in err


def test_guard_traceback_only_on_request(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFRACT_DEBUG", "1")
    with pytest.raises(typer.Exit), guard():
        raise RuntimeError("boom")
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().endswith("(set REFRACT_DEBUG=1 for a traceback)")


def test_guard_lets_exit_through() -> None:
    with pytest.raises(typer.Exit) as info, guard():
        raise typer.Exit(3)
    assert info.value.exit_code == 3


def test_every_refract_error_has_the_exit_code_of_its_kind() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, errors.RefractError):
            want = (errors.EXIT_USAGE if issubclass(cls, errors.UsageError)
                    else errors.EXIT_INTERRUPTED if issubclass(cls, errors.Interrupted)
                    else errors.EXIT_RUNTIME)
            assert cls.exit_code == want, name


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every ``from … import …`` in a source file (absolute modules)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [a.name for a in node.names]))
    return out


def test_cli_and_matrix_import_graph() -> None:
    """No arrow back up from matrix/ to the CLI, no private name imported across the CLI's
    modules, and refract.files at the bottom (nothing of refract's but refract.errors)."""
    for path in sorted((SRC / "matrix").glob("*.py")):
        for module, _ in _imports(path):
            assert not module.startswith("refract.cli"), (path.name, module)
    for path in sorted((SRC / "cli").glob("*.py")):
        for module, names in _imports(path):
            if module.startswith("refract"):
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                assert not private, (path.name, module, private)
    for module, _ in _imports(SRC / "files.py"):
        assert not module.startswith("refract") or module == "refract.errors", module
    assert not (SRC / "matrix" / "command.py").exists() and not (SRC / "cli.py").exists()
