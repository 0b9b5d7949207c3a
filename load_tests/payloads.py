"""Request bodies for the router's public API, and the images and subject ids they carry.

The router's JSON field names live here and nowhere else in load_tests/, so that a change of the
wire format is a one-file change. Images are generated (no data is downloaded), deterministically
from a seed, once per process: a face is a 224x224 RGB JPEG of ~18 KB (what a phone crop to
the model's input size weighs), a fingerprint a 300x300 grayscale PNG of ~70 KB (a 500 dpi sensor crop).
They are not faces or fingerprints; the seeded default weights know neither. Each subject has an
enrolment image and a probe image of the same scene with fresh sensor noise and a small
brightness change, so that verification compares two captures rather than two identical files.

Subject popularity follows a bounded Zipf law: a few subjects verify often, most rarely, which is
what an access-control or login population looks like and what a per-subject cache would see.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image

Modality = Literal["face", "fingerprint"]
MODALITIES: tuple[Modality, ...] = ("face", "fingerprint")

# --- wire format (router/schemas.py) -------------------------------------------------------------
ENROLL_PATH = "/v1/enroll"
VERIFY_PATH = "/v1/verify"
HASH_PATH = "/v1/hash"
AUDIT_PATH = "/v1/audit/{audit_id}"
OUTCOME_PATH = "/v1/audit/{audit_id}/outcome"
EXPLANATION_PATH = "/v1/audit/{audit_id}/explanation"
PIN_HEADER = "X-ServeStack-Arm"
F_SUBJECT = "subject_id"
F_AUDIT_ID = "audit_id"
F_DECISION = "decision"


def enroll_body(subject_id: str, images: Mapping[Modality, str]) -> dict[str, Any]:
    """POST /v1/enroll: a subject and base64 images of one or both modalities."""
    body: dict[str, Any] = {F_SUBJECT: subject_id}
    for modality, image in images.items():
        body[modality] = image
    return body


def verify_body(subject_id: str, images: Mapping[Modality, str]) -> dict[str, Any]:
    """POST /v1/verify: a subject and probe images of one or both modalities."""
    return enroll_body(subject_id, images)


def hash_body(modality: Modality, images: list[str], subject_id: str | None = None) -> dict[str, Any]:
    """POST /v1/hash: codes for images of one modality, nothing stored; the subject is a sticky key."""
    body: dict[str, Any] = {"modality": modality, "images": images}
    if subject_id is not None:
        body[F_SUBJECT] = subject_id
    return body


def arms_of(verify_response: Mapping[str, Any]) -> dict[str, str]:
    """{modality: arm} from a /v1/verify response (router.schemas.AuditRecord).

    ``"modalities": [{"modality": "face", "arm": "v2", ...}, ...]``; a response without arms gives
    {} (the recorder counts those as unattributed).
    """
    arms: dict[str, str] = {}
    for item in verify_response.get("modalities") or []:
        if isinstance(item, Mapping) and "modality" in item and "arm" in item:
            arms[str(item["modality"])] = str(item["arm"])
    return arms


def hash_arm_of(hash_response: Mapping[str, Any]) -> dict[str, str]:
    """{modality: arm} from a /v1/hash response (router.schemas.HashApiResponse)."""
    if "modality" in hash_response and "arm" in hash_response:
        return {str(hash_response["modality"]): str(hash_response["arm"])}
    return {}


def error_code_of(body: Any) -> str:
    """The `code` of a ServeStack error body, or "" when the body is not one."""
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        return str(body["error"].get("code", ""))
    return ""


# --- images ---------------------------------------------------------------------------------------
FACE_SIZE = 224
FINGERPRINT_SIZE = 300
FACE_JPEG_QUALITY = 85


def _face_scene(rng: np.random.Generator) -> np.ndarray:
    """A smooth RGB scene in [0, 1]: an oval 'head' over a gradient, plus low-frequency texture."""
    y, x = np.mgrid[0:FACE_SIZE, 0:FACE_SIZE] / FACE_SIZE
    cx, cy = rng.uniform(0.42, 0.58, size=2)
    head = np.exp(-(((x - cx) / 0.28) ** 2 + ((y - cy) / 0.36) ** 2) ** 2)
    skin = rng.uniform(0.35, 0.85, size=3)
    background = rng.uniform(0.1, 0.9, size=3)
    texture = np.stack([np.sin(rng.uniform(3, 9) * x + rng.uniform(0, 6)) *
                        np.cos(rng.uniform(3, 9) * y + rng.uniform(0, 6)) for _ in range(3)], axis=-1)
    scene = head[..., None] * skin + (1 - head[..., None]) * (background * (0.7 + 0.3 * y[..., None]))
    return np.clip(scene + 0.08 * texture, 0, 1)


def _fingerprint_scene(rng: np.random.Generator) -> np.ndarray:
    """Grayscale ridges in [0, 1]: concentric sine rings around a core, warped, with a soft edge."""
    y, x = np.mgrid[0:FINGERPRINT_SIZE, 0:FINGERPRINT_SIZE] / FINGERPRINT_SIZE
    cx, cy = rng.uniform(0.4, 0.6, size=2)
    r = np.hypot((x - cx) * rng.uniform(0.8, 1.2), y - cy)
    ridges = 0.5 + 0.5 * np.sin(rng.uniform(190, 230) * r + 6 * np.sin(rng.uniform(2, 5) * x))
    pad = np.exp(-(((x - 0.5) / 0.42) ** 2 + ((y - 0.5) / 0.48) ** 2) ** 3)
    return ridges * pad + (1 - pad)  # paper-white outside the finger pad


def _capture(scene: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """One capture of a scene: brightness jitter and sensor noise, as uint8."""
    gain = rng.uniform(0.95, 1.05)
    img = scene * gain + noise * rng.standard_normal(scene.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def encode_face(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="JPEG", quality=FACE_JPEG_QUALITY)
    return buf.getvalue()


def encode_fingerprint(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, "L").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


@dataclass(frozen=True)
class Capture:
    """One image file, raw and base64 (the base64 string is what goes on the wire)."""

    data: bytes
    b64: str

    @classmethod
    def of(cls, data: bytes) -> Capture:
        return cls(data, base64.b64encode(data).decode("ascii"))


@dataclass(frozen=True)
class ImagePool:
    """`size` scenes per modality, each with an enrolment and a probe capture.

    Subject i uses scene i % size; the pool is small on purpose (generating images costs CPU the
    load generator needs for sending requests) and large enough that consecutive requests do not
    carry the same bytes.
    """

    enrol: dict[Modality, list[Capture]]
    probe: dict[Modality, list[Capture]]

    @classmethod
    def generate(cls, size: int = 8, seed: int = 0) -> ImagePool:
        if size < 1:
            raise ValueError("image pool size must be >= 1")
        enrol: dict[Modality, list[Capture]] = {"face": [], "fingerprint": []}
        probe: dict[Modality, list[Capture]] = {"face": [], "fingerprint": []}
        for i in range(size):
            rng = np.random.default_rng([seed, i])
            face = _face_scene(rng)
            finger = _fingerprint_scene(rng)
            enrol["face"].append(Capture.of(encode_face(_capture(face, rng, 0.07))))
            probe["face"].append(Capture.of(encode_face(_capture(face, rng, 0.07))))
            enrol["fingerprint"].append(Capture.of(encode_fingerprint(_capture(finger, rng, 0.05))))
            probe["fingerprint"].append(Capture.of(encode_fingerprint(_capture(finger, rng, 0.05))))
        return cls(enrol, probe)

    @property
    def size(self) -> int:
        return len(self.enrol["face"])

    def enrolment(self, subject: int, modality: Modality) -> Capture:
        return self.enrol[modality][subject % self.size]

    def probe_of(self, subject: int, modality: Modality) -> Capture:
        return self.probe[modality][subject % self.size]


# --- subjects -------------------------------------------------------------------------------------
def subject_id(index: int) -> str:
    """The wire id of subject `index` (stable across runs, so templates can be reused)."""
    return f"lt-subject-{index:06d}"


@dataclass
class ZipfSubjects:
    """Bounded Zipf over `population` subjects: P(rank k) proportional to 1 / k**exponent.

    Ranks map to subject indices through a seeded permutation, so the popular subjects are not
    simply the lowest ids (the router buckets subjects by hash; low ids are no special case there,
    but a reader of the audit log should not see a pattern that the generator made).
    """

    population: int = 1000
    exponent: float = 1.1
    seed: int = 0
    _cdf: np.ndarray = field(init=False, repr=False)
    _order: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.population < 1:
            raise ValueError("population must be >= 1")
        if self.exponent < 0:
            raise ValueError("Zipf exponent must be >= 0")
        weights = 1.0 / np.arange(1, self.population + 1, dtype=np.float64) ** self.exponent
        self._cdf = np.cumsum(weights) / weights.sum()
        self._order = np.random.default_rng([self.seed, 1]).permutation(self.population)

    def probability_of_rank(self, rank: int) -> float:
        """P(the subject of rank `rank`, 1-based)."""
        lower = self._cdf[rank - 2] if rank > 1 else 0.0
        return float(self._cdf[rank - 1] - lower)

    def sample(self, rng: np.random.Generator) -> int:
        """A subject index in [0, population)."""
        rank = int(np.searchsorted(self._cdf, rng.random(), side="right"))
        return int(self._order[min(rank, self.population - 1)])
