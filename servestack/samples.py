"""Sample images for the README's curl examples: a face-sized RGB JPEG and a fingerprint PNG.

Generated deterministically (no data is downloaded). They are not faces or fingerprints: the
seeded default weights do not know either; the images only have the right shape and size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def _face(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:224, 0:224] / 224.0
    base = np.stack([np.sin(6 * x + rng.uniform(0, 6)), np.cos(5 * y + rng.uniform(0, 6)),
                     np.sin(4 * (x + y) + rng.uniform(0, 6))], axis=-1)
    img = (0.5 + 0.35 * base + 0.15 * rng.standard_normal((224, 224, 3))).clip(0, 1)
    return Image.fromarray((img * 255).astype(np.uint8), "RGB")


def _other_face(seed: int) -> Image.Image:
    """A differently structured image (a bright ellipse on a dark ground): the seeded weights put
    its code about 100 bits away from face.jpg's, so verifying it against alice is a reject."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:224, 0:224] / 224.0
    mask = np.exp(-((((x - 0.5) / 0.28) ** 2 + ((y - 0.45) / 0.36) ** 2) ** 2))[..., None]
    skin = np.array([rng.uniform(150, 230), rng.uniform(100, 170), rng.uniform(80, 140)])
    ground = np.full(3, rng.uniform(10, 60))
    img = mask * skin + (1 - mask) * ground + rng.normal(0, 6, (224, 224, 3))
    return Image.fromarray(img.clip(0, 255).astype(np.uint8), "RGB")


def _fingerprint(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:300, 0:300] / 300.0
    r = np.hypot(x - rng.uniform(0.4, 0.6), y - rng.uniform(0.4, 0.6))
    ridges = 0.5 + 0.5 * np.sin(90 * r + 8 * np.sin(3 * x))
    img = (ridges + 0.1 * rng.standard_normal((300, 300))).clip(0, 1)
    return Image.fromarray((img * 255).astype(np.uint8), "L")


def write_samples(directory: Path, seed: int = 7) -> dict[str, Path]:
    """Write face.jpg, fingerprint.png and another subject's face2.jpg unless present."""
    directory.mkdir(parents=True, exist_ok=True)
    out = {"face": directory / "face.jpg", "face2": directory / "face2.jpg",
           "fingerprint": directory / "fingerprint.png"}
    if not out["face"].exists():
        _face(seed).save(out["face"], quality=90)
    if not out["face2"].exists():
        _other_face(seed).save(out["face2"], quality=90)
    if not out["fingerprint"].exists():
        _fingerprint(seed).save(out["fingerprint"])
    return out
