"""refract.scoring (programmatic scoring), progress, repeatability statistics, environment."""

from __future__ import annotations

import io
import shlex
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import needs_core
from refract.engine.environment import kv_allocation_warnings
from refract.errors import UsageError
from refract.files import check_output_path
from refract.kvconfig import KVConfig
from refract.options import parse_float_list, parse_int_list
from refract.progress import PhasedCounter, Reporter, RichReporter, make_reporter
from refract.scoring import ScorePlan, prepare_score, run_score
from refract.scoring.repeatability import summarize_runs, verdict

# --------------------------------------------------------------------------- progress


def test_phased_counter_stitches_phases() -> None:
    c = PhasedCounter(phases=2)
    assert c.update(2, 10) == (2, 20)
    assert c.update(10, 10) == (10, 20)
    assert c.update(3, 10) == (13, 20)  # second phase starts from zero again
    assert c.update(10, 10) == (20, 20)
    assert c.finish() == (20, 20)


def test_phased_counter_unexpected_phase_extends_total() -> None:
    c = PhasedCounter(phases=1)
    assert c.update(4, 4) == (4, 4)
    assert c.update(1, 4) == (5, 8)
    assert c.finish() == (8, 8)


class _FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_make_reporter_only_on_a_terminal() -> None:
    assert isinstance(make_reporter(True, _FakeTTY()), RichReporter)
    assert type(make_reporter(True, io.StringIO())) is Reporter
    assert type(make_reporter(False, _FakeTTY())) is Reporter


def test_rich_reporter_shows_items_done() -> None:
    out = _FakeTTY()
    rep = RichReporter(out)
    with rep.axis("B KLD@D", phases=1) as cb:
        for i in range(1, 6):
            cb(i, 5)
    text = out.getvalue()
    assert "B KLD@D" in text and "5/5" in text


# --------------------------------------------------------------------------- repeatability


def _rep(composite: float, gtm: float, kld: float | None) -> dict[str, Any]:
    axes = {"gtm": {"score": gtm, "skipped": False},
            "kld": {"score": kld, "skipped": kld is None}}
    return {"composite": composite, "axes": axes, "timings": {"total_s": 1.0}}


def test_repeatability_verdicts() -> None:
    assert verdict(0.0) == "HEALTHY" and verdict(1.0) == "HEALTHY"
    assert verdict(2.9) == "NOISY" and verdict(3.1) == "UNSTABLE"
    assert verdict(float("nan")) == "UNSTABLE"
    same = summarize_runs([_rep(90.0, 80.0, 99.0)] * 3)
    assert same["verdict"] == "HEALTHY" and same["stats"]["gtm"]["stdev"] == 0.0
    noisy = summarize_runs([_rep(90.0, 80.0, 99.0), _rep(91.0, 82.0, 99.0)])
    g = noisy["stats"]["gtm"]
    assert (g["min"], g["median"], g["max"], g["range"]) == (80.0, 81.0, 82.0, 2.0)
    assert g["stdev"] == pytest.approx(2 ** 0.5)
    assert noisy["verdict"] == "NOISY" and noisy["worst"] == "gtm"
    bad = summarize_runs([_rep(60.0, 50.0, 99.0), _rep(90.0, 80.0, 99.0)])
    assert bad["verdict"] == "UNSTABLE"
    # an axis skipped in the runs is not summarized
    assert "kld" not in summarize_runs([_rep(90.0, 80.0, None)] * 2)["stats"]
    with pytest.raises(ValueError, match="at least 2"):
        summarize_runs([_rep(90.0, 80.0, 99.0)])


# --------------------------------------------------------------------------- environment


def test_kv_allocation_warnings() -> None:
    ref, cand = KVConfig.parse("ctk=f16,ctv=f16"), KVConfig.parse("ctk=turbo3,ctv=turbo3")
    allocated = {
        ref.label: [{"layers": 24, "type_k": "f16", "type_v": "f16", "cells": 512}],
        cand.label: [{"layers": 24, "type_k": "q8_0", "type_v": "turbo3", "cells": 512}],
    }
    notes = kv_allocation_warnings(allocated, [ref, cand])
    assert len(notes) == 1
    assert "ctk=turbo3,ctv=turbo3" in notes[0] and "K=q8_0" in notes[0]
    assert kv_allocation_warnings(allocated, [ref, ref]) == []


# --------------------------------------------------------------------------- validation


def test_parse_lists() -> None:
    assert parse_int_list("4096, 8192", "--rniah-lengths") == (4096, 8192)
    assert parse_float_list("0.1,0.5,0.9", "--rniah-positions") == (0.1, 0.5, 0.9)
    with pytest.raises(UsageError, match="'8k'"):
        parse_int_list("4096,8k", "--rniah-lengths")
    with pytest.raises(UsageError, match="minimum"):
        parse_int_list("0", "--rniah-lengths")
    with pytest.raises(UsageError, match=r"'-0.1'"):
        parse_float_list("-0.1", "--rniah-positions")
    with pytest.raises(UsageError, match="expected"):
        parse_float_list(" , ", "--rniah-positions")


def test_check_output_path(tmp_path: Path) -> None:
    assert check_output_path(tmp_path / "r.json", "--json-out") == tmp_path / "r.json"
    with pytest.raises(UsageError, match="does not exist"):
        check_output_path(tmp_path / "a" / "r.json", "--json-out")
    with pytest.raises(UsageError, match="is a directory"):
        check_output_path(tmp_path, "--json-out")


def test_prepare_score_and_repro(files: dict[str, Path], tmp_path: Path) -> None:
    from tinymodel import write_tiny_model

    model = write_tiny_model(tmp_path / "m.gguf")
    plan = prepare_score(
        model, " ctk=q8_0 , ctv=q8_0 ", prompts=files["prompts"], corpus=files["corpus"],
        chunks=4, ctx=128, axis_plad=True, seed=7,
    )
    assert isinstance(plan, ScorePlan)
    assert plan.candidate.label == "ctk=q8_0,ctv=q8_0"
    assert [p.id for p in plan.prompts] == ["a", "b"]
    assert plan.corpus_text is not None and plan.corpus_path == files["corpus"]
    cmd = plan.repro_command()
    assert cmd[:2] == ["refract", "score"]
    assert "--axis-plad" in cmd and cmd[cmd.index("--chunks") + 1] == "4"
    assert cmd[cmd.index("--seed") + 1] == "7" and "--ctx" in cmd and "--n-predict" not in cmd

    # the repro command, run through the CLI, builds the same plan
    from refract.cli import app

    seen: list[ScorePlan] = []

    def capture(p: ScorePlan, **kwargs: Any) -> Any:
        seen.append(p)
        raise RuntimeError("stop here")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("refract.scoring.execute_score", capture)
        r = CliRunner().invoke(app, shlex.split(shlex.join(cmd))[1:])
    assert r.exit_code == 1 and "stop here" in r.stderr
    assert seen and seen[0].settings() == plan.settings()


def test_prepare_score_rejects_before_loading(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="nothing to score"):
        prepare_score("x.gguf", "ctk=q8_0", skip_trajectory=True, skip_kld=True)
    with pytest.raises(UsageError, match="'nope'"):
        prepare_score("x.gguf", "nope")
    with pytest.raises(UsageError, match="x.gguf"):
        prepare_score(tmp_path / "x.gguf", "ctk=q8_0")


# --------------------------------------------------------------------------- engine


@needs_core
def test_run_score_programmatic(files: dict[str, Path], tiny_model: Path) -> None:
    from refract import Engine

    opts = {"prompts": files["prompts"], "corpus": files["corpus"], "chunks": 2, "ctx": 128,
            "n_predict": 8, "threads": 1}
    rep = run_score(tiny_model, "ctk=q8_0,ctv=q8_0", **opts)
    assert rep["schema"] == "refract.report.v0.3.3"
    assert rep["axes"]["gtm"]["n_prompts"] == 2 and rep["axes"]["kld"]["chunks"] == 2
    assert rep["axes"]["rniah"]["skipped"] and rep["axes"]["plad"]["skipped"]
    assert rep["composite_detail"]["axes_in_composite"] == ["gtm", "kld"]
    assert rep["environment"]["kv_allocated"]["ctk=q8_0,ctv=q8_0"][0]["type_k"] == "q8_0"
    assert rep["timings"]["gtm_s"] > 0 and rep["timings"]["kld_s"] > 0
    # ref vs ref through the same path scores 100 on both axes
    with Engine(tiny_model, n_threads=1) as eng:
        same = run_score(tiny_model, "ctk=f16,ctv=f16", engine=eng, **opts)
        assert same["axes"]["gtm"]["score"] == 100.0
        assert same["axes"]["kld"]["mean_kld"] == 0.0 and same["composite"] == 100.0
        # the engine stays usable: it belongs to the caller
        assert eng.tokenize("hello").size > 0
