"""The sentence plan, its guide regex and the per-sentence and completeness checks (pure functions)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

from llm_serving.prompts import build_messages, example_answer
from llm_serving.schemas import AuditFacts
from llm_serving.sentences import check_complete, check_sentence, guide_regex, plan, split_sentences, template_text

DATA = Path(__file__).with_name("data")
_spec = importlib.util.spec_from_file_location("llm_records", Path(__file__).with_name("records.py"))
records = importlib.util.module_from_spec(_spec)
sys.modules["llm_records"] = records
_spec.loader.exec_module(records)
_corpus_spec = importlib.util.spec_from_file_location("make_explain_corpus", DATA / "make_explain_corpus.py")
make_corpus = importlib.util.module_from_spec(_corpus_spec)
_corpus_spec.loader.exec_module(make_corpus)

CORPUS = [json.loads(line) for line in (DATA / "explain_corpus.jsonl").read_text().splitlines()]


def test_corpus_is_the_generators_output_and_covers_every_kind() -> None:
    assert CORPUS == json.loads(json.dumps(make_corpus.build()))  # deterministic, committed as generated
    assert len(CORPUS) >= 200
    facts = [AuditFacts.model_validate(row["record"]) for row in CORPUS]
    assert {f.decision for f in facts} == {"accept", "reject"}
    assert {len(f.modalities) for f in facts} == {0, 1, 2}
    assert min(f.threshold for f in facts) == 5 and max(f.threshold for f in facts) == 50
    gaps = [abs(f.fused_distance - f.threshold) for f in facts if f.fused_distance is not None]
    assert sum(g <= 3 for g in gaps) >= 60 and sum(g >= 8 for g in gaps) >= 60  # near and far
    assert any(m.canary for f in facts for m in f.modalities) and any(m.fallbacks for f in facts for m in f.modalities)
    assert {row["kind"] for row in CORPUS} >= {"subject_locked", "client_threshold", "missing_modality", "fallback"}


@pytest.mark.parametrize("row", CORPUS[::7], ids=lambda row: row["record"]["audit_id"])
def test_every_template_sentence_passes_its_check_and_the_template_is_complete(row: dict) -> None:
    facts = AuditFacts.model_validate(row["record"])
    for sentence in plan(facts):
        assert check_sentence(sentence, sentence.template, facts) is None, sentence.template
    assert check_complete(template_text(facts), facts) is None


@pytest.mark.parametrize("row", CORPUS[::5], ids=lambda row: row["record"]["audit_id"])
def test_the_examples_have_the_records_shape_and_pass_the_guide_regex(row: dict) -> None:
    facts = AuditFacts.model_validate(row["record"])
    messages = build_messages(facts)
    assert messages[-1]["content"].startswith("Facts:") and facts.audit_id not in str(messages)
    answer = example_answer(facts)  # the example style applied to the record itself
    guide = guide_regex(plan(facts))
    assert re.fullmatch(guide, answer), answer
    assert check_complete(answer, facts) is None
    for example in (m["content"] for m in messages if m["role"] == "assistant"):
        assert len(example.split(". ")) == len(answer.split(". "))  # one sentence per planned sentence
    assert not re.fullmatch(guide, answer.replace("The verification", "In 2024 the verification"))
    if facts.modalities:
        own = facts.modalities[0].distance
        wrong = answer.replace(f"distance of {own}.", f"distance of {own + 1}.")
        assert wrong != answer and not re.fullmatch(guide, wrong)


@pytest.mark.parametrize(
    ("text", "reason_part"),
    [
        ("The verification was accepted. The face distance is 12.", "lacks the threshold"),
        ("The verification was accepted. The distance is 12; the threshold is 30.", "lacks the distance:face"),
        ("Accepted. The face distance is 12, at or below the threshold of 30, from the canary arm.", "'canary'"),
        ("Accepted, not rejected. The face distance is 12; the threshold is 30.", "decision accept alone"),
    ],
)
def test_incomplete_or_unfounded_texts_fail_completeness(text: str, reason_part: str) -> None:
    assert reason_part in (check_complete(text, records.ACCEPTED) or "")


def test_two_modalities_need_each_distance_attributed_and_the_fused_one() -> None:
    facts = records.MULTIMODAL  # face 47, fingerprint 34, fused 40.5, threshold 30, reject
    good = ("The verification was rejected. The face distance is 47. The fingerprint distance is 34. "
            "The fused distance is 40.5. It is above the threshold of 30.")
    assert check_complete(good, facts) is None
    swapped = good.replace("face distance is 47", "face distance is 34").replace("print distance is 34",
                                                                                  "print distance is 47")
    assert "distance:face" in (check_complete(swapped, facts) or "")
    assert "fused" in (check_complete(good.replace(" The fused distance is 40.5.", ""), facts) or "")
    sentence = plan(facts)[1]  # the face distance
    assert "another modality" in (check_sentence(sentence, "The face and fingerprint distance is 47.", facts) or "")


def test_split_sentences_waits_for_the_end_and_keeps_decimals() -> None:
    assert split_sentences("The fused distance is 40.5. The thr", final=False) == (
        ["The fused distance is 40.5."], " The thr")
    assert split_sentences("The fused distance is 40.", final=False) == ([], "The fused distance is 40.")
    assert split_sentences("It is above the threshold of 30.", final=True) == (["It is above the threshold of 30."], "")


def test_every_decision_kind_has_its_sentence() -> None:
    topics = [s.topic for s in plan(records.EVERY_KIND)]
    assert topics == ["decision", "distance:face", "fallback:face", "canary:face", "missing:fingerprint",
                      "threshold", "override"]
    assert [s.topic for s in plan(records.LOCKED)] == ["decision", "locked"]
    assert "fused" in [s.topic for s in plan(records.MULTIMODAL)]
