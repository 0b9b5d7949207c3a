"""Chat messages for one explanation: the facts go in one per line; the model words them.

One worked example, with the record's decision, is built in the record's own shape (the same
modalities and decision kinds, other numbers): a 135M model follows the nearest example sentence
by sentence, so an example with another shape makes it write about a modality or a kind the
record lacks. The guide regex (``llm_serving.sentences``) forces each sentence's slots and forbids
other digits, so an example's numbers can never be copied into the record's text.
"""

from __future__ import annotations

from llm_serving.schemas import AuditFacts
from llm_serving.sentences import Sentence, plan

SYSTEM = (
    "You explain biometric verification results to an auditor. Write one short plain sentence for each "
    "fact, in the given order. Use only the facts given; do not add numbers, names or reasons."
)

# Example numbers: (threshold, distances) per decision and modality count; none is likely to be a
# record's own, and the regex would refuse them anyway.
_EXAMPLE_NUMBERS = {
    ("accept", 1): (35, [9]), ("accept", 2): (35, [9, 13]),
    ("reject", 1): (25, [41]), ("reject", 2): (25, [41, 33]),
}


def _example_facts(facts: AuditFacts, decision: str) -> AuditFacts:
    """``facts``' shape with the example numbers of ``decision``."""
    if facts.kind == "subject_locked":
        return facts.model_copy(update={"audit_id": "example"})
    threshold, distances = _EXAMPLE_NUMBERS[(decision, len(facts.modalities))]
    modalities = [m.model_copy(update={"distance": d}) for m, d in zip(facts.modalities, distances, strict=True)]
    return facts.model_copy(update={"audit_id": "example", "decision": decision, "threshold": threshold,
                                    "modalities": modalities, "fused_distance": sum(distances) / len(distances)})


def _example_sentence(sentence: Sentence, facts: AuditFacts) -> str:
    """How the example answers each kind of sentence: plain, slots in order, no other digit."""
    kind, _, name = sentence.topic.partition(":")
    slots = sentence.slots
    if kind == "decision":
        return f"The verification was {slots[0]}."
    if kind == "locked":
        return "The subject was locked after repeated rejections."
    if kind == "distance":
        return f"The {name} probe had a Hamming distance of {slots[1]}."
    if kind == "fallback":
        return f"The {name} code was computed by a fallback backend."
    if kind == "canary":
        return f"The {name} code came from a canary arm."
    if kind == "missing":
        return f"The {name} was not compared."
    if kind == "fused":
        return f"The fused distance, the mean of both, was {slots[1]}."
    if kind == "threshold":
        subject = "fused distance" if len(facts.modalities) > 1 else "distance"
        return f"The {subject} is {slots[0]} the threshold of {slots[-1]}."
    return "The threshold was chosen by the client."  # override


def example_answer(facts: AuditFacts) -> str:
    return " ".join(_example_sentence(sentence, facts) for sentence in plan(facts))


def facts_message(facts: AuditFacts) -> str:
    return "Facts:\n" + "\n".join(f"- {sentence.fact}" for sentence in plan(facts))


def build_messages(facts: AuditFacts) -> list[dict[str, str]]:
    """System prompt, an example of the record's shape, then the record's facts (no ids, no personal data)."""
    # One example, with the record's decision: a small model copies the nearest example's wording,
    # and a second example doubles the prompt (the prefill dominates on CPU) without helping.
    example = _example_facts(facts, facts.decision)
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": facts_message(example)},
        {"role": "assistant", "content": example_answer(example)},
        {"role": "user", "content": facts_message(facts)},
    ]
