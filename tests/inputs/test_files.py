"""refract.files: atomic writes, output-path checks, report file names (one home each)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from refract.errors import UsageError
from refract.files import (
    atomic_output,
    atomic_write_bytes,
    atomic_write_text,
    check_out_dir,
    check_output_path,
    check_outputs_distinct,
    report_stem,
    scratch_file,
    slug,
)


def test_atomic_write_replaces_whole_files_with_umask_permissions(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    assert atomic_write_text(target, "héllo") == target
    assert target.read_text(encoding="utf-8") == "héllo"
    atomic_write_bytes(target, b"again", durable=False)
    assert target.read_bytes() == b"again"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_atomic_output_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("stopped")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_nested_atomic_outputs_replace_together(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    with pytest.raises(ValueError), atomic_output(a) as ta, atomic_output(b) as tb:
        ta.write_text("A")
        tb.write_text("B")
        raise ValueError("second file fails its check")
    assert not a.exists() and not b.exists() and not list(tmp_path.iterdir())
    with atomic_output(a) as ta, atomic_output(b) as tb:
        ta.write_text("A")
        tb.write_text("B")
    assert a.read_text() == "A" and b.read_text() == "B"


def test_scratch_file_is_removed(tmp_path: Path) -> None:
    with scratch_file(tmp_path, suffix=".zip") as p:
        assert p.exists() and p.suffix == ".zip" and p.parent == tmp_path
    assert not p.exists()


def test_check_output_path_refuses_what_cannot_become_the_file(tmp_path: Path) -> None:
    (tmp_path / "old.json").write_text("{}")
    assert check_output_path(tmp_path / "old.json", "--json-out") == tmp_path / "old.json"
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(UsageError, match="exists and is not a regular file"):
        check_output_path(tmp_path / "pipe", "--json-out")
    with pytest.raises(UsageError, match=r"--out '.*old.json.*' is not a directory"):
        check_output_path(tmp_path / "old.json" / "r.md", "--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json", "pipe"]  # no probe left


def test_check_out_dir_creates_parents_and_refuses_files(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "out"
    assert check_out_dir(deep) == deep and deep.is_dir()
    assert check_out_dir(deep) == deep  # an existing directory is fine
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UsageError, match=r"--out-dir '.*afile' exists and is not a directory"):
        check_out_dir(tmp_path / "afile")
    with pytest.raises(UsageError, match=r"--out '.*afile.*is not a directory"):
        check_out_dir(tmp_path / "afile" / "sub", "--out")
    assert not list(deep.iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_check_out_dir_refuses_an_unwritable_directory(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(UsageError, match="cannot write in"):
            check_out_dir(ro)
        with pytest.raises(UsageError, match="cannot write in"):
            check_out_dir(ro / "new")
    finally:
        ro.chmod(0o700)


def test_outputs_distinct(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    with pytest.raises(UsageError, match="is the model"):
        check_outputs_distinct({"--json-out": model}, {"model": model})
    with pytest.raises(UsageError, match="also given as --json-out"):
        check_outputs_distinct({"--json-out": tmp_path / "r", "--html-out": tmp_path / "r"}, {})
    check_outputs_distinct({"--json-out": tmp_path / "r", "--html-out": None}, {"model": model})


def test_report_stem_and_slug() -> None:
    assert slug("Mistral-Small 24B") == "mistral-small-24b" and slug("  ") == "x"
    assert report_stem("Tiny A", "ctk=q8_0,ctv=q4_0") == "tiny-a__ctk-q8_0_ctv-q4_0"
    assert report_stem("gemma-3-270m", "ctk=turbo4,ctv=turbo4") == (
        "gemma-3-270m__ctk-turbo4_ctv-turbo4")
