"""Generated images, subject distribution and request bodies (checked against the router's schemas)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from load_tests.payloads import (
    FACE_SIZE,
    FINGERPRINT_SIZE,
    ImagePool,
    ZipfSubjects,
    arms_of,
    enroll_body,
    error_code_of,
    hash_arm_of,
    hash_body,
    subject_id,
    verify_body,
)


@pytest.fixture(scope="module")
def pool() -> ImagePool:
    return ImagePool.generate(size=3, seed=5)


def test_face_is_a_realistic_rgb_jpeg(pool: ImagePool) -> None:
    for capture in pool.enrol["face"] + pool.probe["face"]:
        img = Image.open(io.BytesIO(capture.data))
        assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (FACE_SIZE, FACE_SIZE))
        assert 12_000 <= len(capture.data) <= 35_000


def test_fingerprint_is_a_grayscale_png(pool: ImagePool) -> None:
    for capture in pool.enrol["fingerprint"]:
        img = Image.open(io.BytesIO(capture.data))
        assert (img.format, img.mode, img.size) == ("PNG", "L", (FINGERPRINT_SIZE, FINGERPRINT_SIZE))
        assert 30_000 <= len(capture.data) <= 120_000


def test_images_are_deterministic_per_seed(pool: ImagePool) -> None:
    again = ImagePool.generate(size=3, seed=5)
    other = ImagePool.generate(size=1, seed=6)
    assert [c.data for c in again.enrol["face"]] == [c.data for c in pool.enrol["face"]]
    assert other.enrol["face"][0].data != pool.enrol["face"][0].data


def test_probe_is_another_capture_of_the_same_scene(pool: ImagePool) -> None:
    def pixels(data: bytes) -> np.ndarray:
        # 8x8 block means: sensor noise averages out, the scene remains.
        img = np.asarray(Image.open(io.BytesIO(data)), dtype=np.float64)
        return img.reshape(FACE_SIZE // 8, 8, FACE_SIZE // 8, 8, 3).mean(axis=(1, 3))

    enrol, probe = pixels(pool.enrolment(0, "face").data), pixels(pool.probe_of(0, "face").data)
    other = pixels(pool.enrolment(1, "face").data)
    assert pool.enrolment(0, "face").data != pool.probe_of(0, "face").data
    # Same scene: far closer to its own enrolment than to another subject's.
    assert np.abs(enrol - probe).mean() * 3 < np.abs(other - probe).mean()
    # Subject i uses scene i % size.
    assert pool.enrolment(4, "fingerprint") == pool.enrolment(1, "fingerprint")


def test_zipf_frequencies_follow_the_law() -> None:
    subjects = ZipfSubjects(population=100, exponent=1.1, seed=3)
    rng = np.random.default_rng(0)
    draws = np.array([subjects.sample(rng) for _ in range(20_000)])
    assert draws.min() >= 0 and draws.max() < 100
    counts = np.bincount(draws, minlength=100)
    top = np.sort(counts)[::-1]
    p1 = subjects.probability_of_rank(1)
    # Binomial 5-sigma band around the expected count of the most popular subject.
    sigma = (20_000 * p1 * (1 - p1)) ** 0.5
    assert abs(top[0] - 20_000 * p1) < 5 * sigma
    assert top[0] / top[9] == pytest.approx(10 ** 1.1, rel=0.25)
    assert sum(subjects.probability_of_rank(k) for k in range(1, 101)) == pytest.approx(1.0)


def test_zipf_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        ZipfSubjects(population=0)
    with pytest.raises(ValueError):
        ZipfSubjects(exponent=-1)


def test_bodies_validate_against_the_router_schemas(pool: ImagePool) -> None:
    schemas = pytest.importorskip("router.schemas")
    images = {"face": pool.enrolment(0, "face").b64, "fingerprint": pool.enrolment(0, "fingerprint").b64}
    enroll = schemas.EnrollRequest.model_validate(enroll_body(subject_id(7), images))
    assert enroll.subject_id == "lt-subject-000007" and enroll.images() == images
    verify = schemas.VerifyRequest.model_validate(verify_body(subject_id(7), {"face": images["face"]}))
    assert verify.fingerprint is None
    hashed = schemas.HashApiRequest.model_validate(hash_body("fingerprint", [images["fingerprint"]], subject_id(1)))
    assert hashed.modality == "fingerprint" and hashed.subject_id == "lt-subject-000001"


def _modality_result(modality: str, arm: str) -> dict[str, object]:
    return {"modality": modality, "route": modality, "arm": arm, "arm_reason": "sticky",
            "backend": f"hasher-{modality}-{arm}", "model_version": arm[1:], "precision": "int8",
            "engine_backend": "openvino", "distance": 7, "decision": "accept", "latency_ms": 3.0, "attempts": 1}


def test_arms_are_read_from_a_router_verify_response() -> None:
    schemas = pytest.importorskip("router.schemas")
    record = schemas.AuditRecord.model_validate({
        "audit_id": "a1", "created_at": 1.0, "trace_id": "0" * 32, "subject_id": "s", "decision": "accept",
        "threshold": 20.0, "fused_distance": 7.0, "latency_ms": 5.0,
        "modalities": [_modality_result("face", "v2"), _modality_result("fingerprint", "v1")],
    })
    assert arms_of(record.model_dump(mode="json")) == {"face": "v2", "fingerprint": "v1"}
    assert arms_of({"audit_id": "a1"}) == {}


def test_hash_arm_and_error_code() -> None:
    assert hash_arm_of({"modality": "face", "arm": "v1", "codes": []}) == {"face": "v1"}
    assert hash_arm_of({"codes": []}) == {}
    assert error_code_of({"error": {"code": "overloaded", "message": "busy"}}) == "overloaded"
    assert error_code_of("not json") == ""
