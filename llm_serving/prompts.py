"""Chat messages for one explanation: the facts go in one per line; the model words them.

Two worked examples (one accept, one reject; no special decision kind, so a small model has
nothing to copy into a plain record) show the style: one sentence per fact, in the facts' order.
The guide regex (``llm_serving.sentences``) forces each sentence's slots and forbids other
digits, so an example's numbers can never be copied into another record's text.
"""

from __future__ import annotations

from llm_serving.schemas import AuditFacts, ModalityFacts
from llm_serving.sentences import plan

SYSTEM = (
    "You explain biometric verification results to an auditor. Write one short plain sentence for each "
    "fact, in the given order. Use only the facts given; do not add numbers, names or reasons."
)


def _modality(name: str, distance: int, **extra: object) -> ModalityFacts:
    return ModalityFacts(modality=name, distance=distance, arm="v1", model_version="1",  # type: ignore[arg-type]
                         precision="int8", backend="onnxruntime", **extra)  # type: ignore[arg-type]


_EXAMPLES: list[tuple[AuditFacts, str]] = [
    (
        AuditFacts(audit_id="example-1", decision="reject", threshold=25, fused_distance=37,
                   modalities=[_modality("face", 41), _modality("fingerprint", 33)]),
        "The verification was rejected. The face probe had a Hamming distance of 41. "
        "The fingerprint probe had a Hamming distance of 33. The fused distance, the mean of both, was 37. "
        "The fused distance is above the threshold of 25.",
    ),
    (
        AuditFacts(audit_id="example-2", decision="accept", threshold=35, fused_distance=9,
                   modalities=[_modality("face", 9)]),
        "The verification was accepted. The face probe had a Hamming distance of 9. "
        "The distance is at or below the threshold of 35.",
    ),
]


def facts_message(facts: AuditFacts) -> str:
    return "Facts:\n" + "\n".join(f"- {sentence.fact}" for sentence in plan(facts))


def build_messages(facts: AuditFacts) -> list[dict[str, str]]:
    """System prompt, two examples, then the record's facts (no ids, no personal data)."""
    messages = [{"role": "system", "content": SYSTEM}]
    # The example with the record's decision goes last: a small model copies the nearest example's
    # wording, so it should be the one that says the right thing.
    examples = sorted(_EXAMPLES, key=lambda pair: pair[0].decision == facts.decision)
    for example, answer in examples:
        messages.append({"role": "user", "content": facts_message(example)})
        messages.append({"role": "assistant", "content": answer})
    messages.append({"role": "user", "content": facts_message(facts)})
    return messages
