"""Audit records shared by the explainer tests (imported by path: tests run with importlib mode)."""

from __future__ import annotations

from llm_serving.schemas import AuditFacts, ModalityFacts


def face(distance: int, *, arm: str = "v1", version: str = "1") -> ModalityFacts:
    return ModalityFacts(modality="face", distance=distance, arm=arm, model_version=version,
                         precision="int8", backend="onnxruntime")


def fingerprint(distance: int, **extra: object) -> ModalityFacts:
    return ModalityFacts(modality="fingerprint", distance=distance, arm="v1", model_version="1",
                         precision="bf16", backend="openvino", **extra)  # type: ignore[arg-type]


ACCEPTED = AuditFacts(audit_id="aud-accept", decision="accept", threshold=30, fused_distance=12, modalities=[face(12)])
REJECTED = AuditFacts(audit_id="aud-reject", decision="reject", threshold=30, fused_distance=47, modalities=[face(47)])
MULTIMODAL = AuditFacts(
    audit_id="aud-multi", decision="reject", threshold=30, fused_distance=40.5,
    modalities=[face(47, arm="v2", version="2"), fingerprint(34)],
)

LOCKED = AuditFacts(audit_id="aud-locked", kind="subject_locked", decision="reject", threshold=24)
# Every decision kind at once: a fallback, a canary arm, the client's threshold, a missing modality.
EVERY_KIND = AuditFacts(
    audit_id="aud-kinds", decision="accept", threshold=30, threshold_source="client", fused_distance=21,
    modalities=[face(21, arm="v2").model_copy(update={"canary": True, "fallbacks": ["tensorrt"]})],
    missing_modalities=["fingerprint"],
)


def record_json(facts: AuditFacts) -> dict:
    return facts.model_dump(mode="json")
