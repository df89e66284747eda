"""Adding an axis is one class and one registry line (issue 21): a toy axis registered here,
and nowhere else, is scored, enters the composite and the diagnosis, the JSON report, the
terminal card, the HTML page, the memory plan and the comparability fingerprint."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from refract.axes import Axis, AxisResult, RunContext, registry
from refract.composite import composite_score
from refract.options import ScoreOptions

TOY_SCORE = 40.0


class ToyAxis(
    Axis, key="toy", letter="T", title="Toy", method="toy-label-distance", method_version="3",
    description="A toy axis registered by a test.", holds="toyness",
    low_sentence="Toy loss: the toy axis is below 80.",
):
    """Scores each candidate by whether its label differs from the reference's (the engine
    is asked for something real: each candidate's context bytes). No ``flag``: always on."""

    def memory(self, engine: Any, plan: Any) -> int | None:
        return 12345

    def run(self, ctx: RunContext) -> dict[str, AxisResult]:
        out: dict[str, AxisResult] = {}
        for c in ctx.candidates:
            with ctx.timed(ctx.timings[c], "toy_s"):
                nbytes = ctx.engine.estimate_context_bytes(c, 64, 1, 64)
                out[c] = {"score": TOY_SCORE if c != ctx.reference else 100.0,
                          "context_bytes": int(nbytes), "toy_param": 7}
        return out

    def fingerprint(self, report: Mapping[str, Any], entry: Mapping[str, Any],
                    settings: Mapping[str, Any]) -> dict[str, Any]:
        return {"toy.param": entry.get("toy_param")}

    def card_detail(self, entry: Mapping[str, Any]) -> str:
        return f"toy bytes {entry.get('context_bytes')}"

    def html_body(self, report: Mapping[str, Any], entry: Mapping[str, Any]) -> str:
        from refract.report.kit import kv_table

        return kv_table([("toy context bytes", entry.get("context_bytes"))])


@pytest.fixture
def toy() -> Iterator[ToyAxis]:
    axis = registry.register(ToyAxis())
    try:
        yield axis  # type: ignore[misc]
    finally:
        registry.unregister("toy")


def test_registry_refuses_incomplete_and_duplicate_axes() -> None:
    class Nameless(Axis):
        pass

    with pytest.raises(TypeError, match="has no key"):
        registry.register(Nameless())
    with pytest.raises(TypeError, match="unknown axis attribute 'titel'"):
        type("Misspelt", (Axis,), {}, titel="Toy")  # a typo is refused, never silently kept
    with pytest.raises(ValueError, match="already registered"):
        registry.register(type(registry.get("kld"))())  # type: ignore[arg-type]
    assert registry.keys() == ("gtm", "kld", "rniah", "plad")


def test_a_registered_axis_is_scored_reported_and_compared(
    toy: ToyAxis, tiny_model: Path, files: dict[str, Path]
) -> None:
    from refract.report.comparability import check_comparable, fingerprint
    from refract.report.html import render_html
    from refract.report.text import render_text
    from refract.scoring import prepare_score, run_score
    from refract.scoring.memory import memory_plan

    opts = dict(corpus=str(files["corpus"]), prompts=str(files["prompts"]), chunks=1, ctx=64,
                n_predict=4, threads=1, skip_trajectory=True)
    assert ScoreOptions(**opts).axes == ["kld", "toy"]  # type: ignore[arg-type]
    rep = run_score(tiny_model, "ctk=q8_0,ctv=q8_0", **opts)

    entry = rep["axes"]["toy"]
    assert entry["score"] == TOY_SCORE and entry["status"] == "ok" and entry["in_composite"]
    assert (entry["method"], entry["method_version"]) == ("toy-label-distance", "3")
    assert entry["description"] == ToyAxis.description and entry["context_bytes"] > 0
    assert rep["timings"]["toy_s"] >= 0
    # the composite is the harmonic mean over KLD and the toy axis
    kld = rep["axes"]["kld"]["score"]
    assert rep["composite"] == pytest.approx(composite_score([kld, TOY_SCORE]))
    assert rep["composite_detail"]["axes_in_composite"] == ["kld", "toy"]
    assert rep["composite_detail"]["toy_score"] == TOY_SCORE
    assert rep["settings"]["axes"] == ["kld", "toy"]
    assert "Toy loss: the toy axis is below 80." in rep["diagnosis"]

    card = render_text(rep, color=False, width=160)
    assert "T  Toy" in card and "toy bytes" in card
    page = render_html(rep)
    assert "T · Toy" in page and "toy context bytes" in page and "toy-label-distance" in page

    fp = fingerprint(rep)
    assert fp["toy.method"] == "toy-label-distance v3" and fp["toy.param"] == 7
    other = {**rep, "axes": {**rep["axes"], "toy": {**entry, "toy_param": 8}}}
    result = check_comparable([rep, other])
    assert not result.ok and "toy.param" in result.reasons()
    bumped = {**rep, "axes": {**rep["axes"], "toy": {**entry, "method_version": "4"}}}
    assert "toy.method" in check_comparable([rep, bumped]).reasons()

    from refract import Engine

    plan = prepare_score(tiny_model, "ctk=q8_0,ctv=q8_0", **opts)
    eng = Engine(tiny_model, n_threads=1)
    try:
        assert memory_plan(eng, plan)["toy"] == 12345
    finally:
        eng.close()


def test_a_failing_axis_is_an_error_and_the_others_are_kept(
    toy: ToyAxis, tiny_model: Path, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from refract.scoring import run_score

    def boom(ctx: RunContext) -> dict[str, AxisResult]:
        return {c: ctx.guarded(lambda: 1 / 0) for c in ctx.candidates}  # type: ignore[misc]

    monkeypatch.setattr(toy, "run", boom)
    rep = run_score(tiny_model, "ctk=q8_0,ctv=q8_0", corpus=str(files["corpus"]),
                    prompts=str(files["prompts"]), chunks=1, ctx=64, threads=1,
                    skip_trajectory=True)
    assert rep["axes"]["toy"]["status"] == "error" and "ZeroDivisionError" in \
        rep["axes"]["toy"]["error"]
    assert rep["status"] == "partial" and rep["composite"] == rep["axes"]["kld"]["score"]


def test_the_diagnosis_speaks_only_of_axes_that_ran() -> None:
    from refract.composite import DIAG_MILD_DRIFT, diagnose

    # A low, B fine, nothing else ran: no word about retrieval or robustness
    [only_ab] = diagnose({"gtm": 70.0, "kld": 95.0})
    assert "retrieval" not in only_ab and "robustness" not in only_ab
    assert only_ab.startswith("Mild short-context drift")
    [with_c] = diagnose({"gtm": 70.0, "kld": 95.0, "rniah": 100.0})
    assert "while retrieval holds" in with_c and "robustness" not in with_c
    assert diagnose({"gtm": 70.0, "kld": 95.0, "rniah": 100.0, "plad": 95.0}) == [
        DIAG_MILD_DRIFT]
    [broken] = diagnose({"gtm": 30.0, "kld": 40.0, "plad": 95.0})
    assert broken.endswith("but robustness to prompt changes is intact.")
    # with only A and B in the composite, both failing is catastrophic, never "intact" others
    assert diagnose({"gtm": 30.0, "kld": 40.0})[0].startswith("Catastrophic")
