"""Chat messages for one explanation: the facts go in already written; the model rephrases.

Two worked examples (one accept, one reject, different modalities and numbers) teach the JSON
shape. A 135M model copies an example's wording, so the examples use numbers and modalities
that the grounding check would catch if copied into another record's explanation.
"""

from __future__ import annotations

import json

from llm_serving.facts import fact_lines
from llm_serving.schemas import AuditFacts, ModalityFacts

SYSTEM = (
    "You explain biometric verification results to an auditor in one or two plain sentences. "
    "Use only the facts given; do not add numbers, names or reasons. Reply with JSON."
)

_EXAMPLES: list[tuple[AuditFacts, dict[str, object]]] = [
    (
        AuditFacts(
            audit_id="example-1", decision="reject", threshold=25, fused_distance=41,
            modalities=[ModalityFacts(modality="fingerprint", distance=41, arm="v1", model_version="1",
                                      precision="int8", backend="onnxruntime")],
        ),
        {
            "decision": "reject",
            "explanation": "The fingerprint was rejected: its Hamming distance of 41 is above the threshold "
            "of 25, so it did not match the enrolled template.",
            "numbers_cited": [41, 25],
        },
    ),
    (
        AuditFacts(
            audit_id="example-2", decision="accept", threshold=35, fused_distance=9,
            modalities=[ModalityFacts(modality="face", distance=9, arm="v1", model_version="1",
                                      precision="bf16", backend="openvino")],
        ),
        {
            "decision": "accept",
            "explanation": "The face was accepted: its Hamming distance of 9 is at or below the threshold of 35, "
            "so it matched the enrolled template.",
            "numbers_cited": [9, 35],
        },
    ),
]


def facts_message(facts: AuditFacts) -> str:
    return "Facts:\n" + "\n".join(f"- {line}" for line in fact_lines(facts))


def build_messages(facts: AuditFacts) -> list[dict[str, str]]:
    """System prompt, two examples, then the record's facts (no ids, no personal data)."""
    messages = [{"role": "system", "content": SYSTEM}]
    # The example with the record's decision goes last: a small model copies the nearest example's
    # wording, so it should be the one that says the right thing.
    examples = sorted(_EXAMPLES, key=lambda pair: pair[0].decision == facts.decision)
    for example, answer in examples:
        messages.append({"role": "user", "content": facts_message(example)})
        messages.append({"role": "assistant", "content": json.dumps(answer)})
    messages.append({"role": "user", "content": facts_message(facts)})
    return messages
