"""The grounding check, the template and the record's consistency rules (pure functions)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from llm_serving.facts import allowed_numbers, check_consistent, numbers_in
from llm_serving.grounding import StatedExplanation, check, parse_stated
from llm_serving.prompts import facts_message
from llm_serving.schemas import AuditFacts
from llm_serving.sentences import template_text

_spec = importlib.util.spec_from_file_location("llm_records", Path(__file__).with_name("records.py"))
records = importlib.util.module_from_spec(_spec)
sys.modules["llm_records"] = records
_spec.loader.exec_module(records)


def stated(decision: str, text: str, cited: list[float] | None = None) -> StatedExplanation:
    return StatedExplanation(decision=decision, explanation=text, numbers_cited=cited or [])


@pytest.mark.parametrize("facts", [records.ACCEPTED, records.REJECTED, records.MULTIMODAL])
def test_template_states_every_fact_and_passes_its_own_check(facts: AuditFacts) -> None:
    text = template_text(facts)
    assert check(stated(facts.decision, text), facts).ok
    for m in facts.modalities:
        assert f" {m.distance} of 128 bits" in text
        assert m.precision in text and m.backend in text and f"arm {m.arm}" in text
    assert ("accepted" in text) == (facts.decision == "accept")


def test_good_rephrasing_passes() -> None:
    text = "The face was accepted: its Hamming distance of 12 is at or below the threshold of 30, so it matched."
    assert check(stated("accept", text, [12, 30]), records.ACCEPTED) == check(stated("accept", text), records.ACCEPTED)
    assert check(stated("accept", text, [12, 30]), records.ACCEPTED).ok


@pytest.mark.parametrize(
    ("facts", "result", "reason_part"),
    [
        (records.ACCEPTED, stated("reject", "The face was rejected at distance 12."), "stated decision"),
        (records.ACCEPTED, stated("accept", "The face was accepted: distance 13, threshold 30."), "number 13"),
        (records.ACCEPTED, stated("accept", "The face was accepted: distance 12.", [12, 31]), "cited number 31"),
        (records.ACCEPTED, stated("accept", "The face did not match: distance 12, threshold 30."), "decision accept"),
        (records.ACCEPTED, stated("accept", "Accepted: distance 12 is above the threshold 30."), "above the threshold"),
        (records.REJECTED, stated("reject", "Rejected: 47 is below the threshold of 30."), "below the threshold"),
        (records.REJECTED, stated("reject", "The fingerprint was rejected: distance 47."), "names fingerprint"),
        (records.REJECTED, stated("reject", "The face was rejected, so it matched the template."), "decision reject"),
        (records.MULTIMODAL, stated("reject", "Rejected: the fingerprint distance of 47 is too high."), "of another"),
    ],
)
def test_wrong_facts_fail_with_a_reason(facts: AuditFacts, result: StatedExplanation, reason_part: str) -> None:
    verdict = check(result, facts)
    assert not verdict.ok
    assert reason_part in (verdict.reason or "")


def test_numbers_inside_words_are_not_numbers() -> None:
    assert numbers_in("int8 fp16 v2 128-bit 16.25 and 7.") == [128.0, 16.25, 7.0]
    assert {128.0, 30.0, 12.0, 1.0, 8.0} <= allowed_numbers(records.ACCEPTED)


def test_parse_stated_refuses_other_shapes() -> None:
    assert parse_stated('{"decision":"accept","explanation":" ok ","numbers_cited":[1,2.5]}').numbers_cited == [1, 2.5]
    bad_number = '{"decision":"accept","explanation":"x","numbers_cited":[true]}'
    for raw in ("not json", "[1]", '{"decision":"accept"}', bad_number):
        with pytest.raises(ValueError):
            parse_stated(raw)


def test_impossible_records_are_named() -> None:
    assert check_consistent(records.MULTIMODAL) is None
    bad_decision = records.ACCEPTED.model_copy(update={"decision": "reject"})
    assert "contradicts" in (check_consistent(bad_decision) or "")
    bad_fused = records.MULTIMODAL.model_copy(update={"fused_distance": 41})
    assert "not the mean" in (check_consistent(bad_fused) or "")


def test_fact_lines_hold_no_ids() -> None:
    joined = facts_message(records.MULTIMODAL)
    assert records.MULTIMODAL.audit_id not in joined
    assert "40.5" in joined and "47" in joined and "34" in joined


def test_fused_distance_attributed_to_one_modality_is_refused() -> None:
    """Regression (seen on servestack up): face 72 + fingerprint 0 -> fused 36, and the model wrote
    "The fingerprint was rejected: its Hamming distance of 36"; the check let it through."""
    facts = AuditFacts.model_validate({
        "audit_id": "a1", "decision": "reject", "threshold": 24, "fused_distance": 36,
        "modalities": [
            {"modality": "face", "distance": 72, "arm": "v1", "model_version": "1", "precision": "int8",
             "backend": "openvino"},
            {"modality": "fingerprint", "distance": 0, "arm": "v1", "model_version": "1", "precision": "int8",
             "backend": "openvino"},
        ],
    })
    wrong = "The fingerprint was rejected: its Hamming distance of 36 is above the threshold of 24."
    result = check(stated("reject", wrong), facts)
    assert not result.ok and "its distance is 0" in result.reason
    right = ("Rejected: the face differed in 72 bits and the fingerprint in 0, so the fused distance of 36 "
             "is above the threshold of 24.")
    assert check(stated("reject", right), facts).ok
