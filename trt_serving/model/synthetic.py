"""Deterministic, varied generated images: the default calibration and held-out sets.

Why varied: a seeded network fed near-identical images gives pooled features at cosine ~0.97 and
codes collapse; BatchNorm recalibration, the PCA + ITQ projection and INT8 calibration all need
images that differ in colour, contrast, brightness and texture scale. Faces get smooth blobs and
gratings in colour; fingerprints get ridge patterns (oriented sinusoids over a smooth
orientation field) inside an elliptic mask, in grayscale.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias

from trt_serving.model.hasher import Preprocessing


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int) -> np.ndarray:
    """Random field of ``cells`` x ``cells`` values upsampled bicubically to size x size."""
    small = torch.from_numpy(rng.standard_normal((1, channels, cells, cells)).astype(np.float32))
    big = F.interpolate(small, size=(size, size), mode="bicubic", align_corners=False)
    return big[0].numpy()


def _face_like(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = _smooth_noise(rng, size, int(rng.integers(2, 8)), 3) * rng.uniform(0.2, 1.0)
    img += _smooth_noise(rng, size, int(rng.integers(8, 64)), 3) * rng.uniform(0.0, 0.6)
    theta, freq = rng.uniform(0, np.pi), rng.uniform(2, 40)
    grating = np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + rng.uniform(0, 6.3))
    img += grating[None] * rng.uniform(0.0, 0.8) * rng.uniform(-1, 1, size=(3, 1, 1))
    for _ in range(int(rng.integers(1, 5))):  # ellipses: a head, eyes, shapes
        cx, cy, rx, ry = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.4), rng.uniform(0.05, 0.4)
        mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
        img[:, mask] += rng.uniform(-1.5, 1.5, size=(3, 1))
    return img


def _fingerprint_like(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    orient = _smooth_noise(rng, size, int(rng.integers(2, 5)), 1)[0] * rng.uniform(0.5, 2.5)
    orient += rng.uniform(0, np.pi)
    freq = rng.uniform(12, 40)
    ridges = np.sin(2 * np.pi * freq * (xx * np.cos(orient) + yy * np.sin(orient)) + rng.uniform(0, 6.3))
    cx, cy, rx, ry = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6), rng.uniform(0.25, 0.5), rng.uniform(0.3, 0.55)
    mask = np.clip(1.5 - (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2), 0, 1)
    img = ridges * mask * rng.uniform(0.4, 1.5) + _smooth_noise(rng, size, int(rng.integers(4, 32)), 1)[0] * 0.3
    return np.repeat(img[None], 3, axis=0)


def generate_images(n: int, seed: int, *, size: int = 224, grayscale: bool = False) -> np.ndarray:
    """``n`` uint8 images [n, size, size, 3] (RGB; grayscale ones have three equal channels)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        img = _fingerprint_like(rng, size) if grayscale else _face_like(rng, size)
        img = (img - img.mean()) / (img.std() + 1e-6)
        contrast, brightness = rng.uniform(20, 80), rng.uniform(60, 200)
        gains = np.ones((3, 1, 1)) if grayscale else rng.uniform(0.6, 1.4, size=(3, 1, 1))
        img = img * contrast * gains + brightness
        out[i] = np.clip(img, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    return out


def to_input(images: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """uint8 [n, H, W, 3] at the model's size -> normalised float32 [n, 3, H, W]."""
    x = images.astype(np.float32) / 255.0
    if pre.color == "L":  # ITU-R 601 luma, as PIL's convert("L"), replicated to 3 channels
        luma = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        x = np.repeat(luma[..., None], 3, axis=-1)
    x = (x - np.array(pre.mean, dtype=np.float32)) / np.array(pre.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def generated_inputs(n: int, seed: int, pre: Preprocessing) -> np.ndarray:
    """Generated images already preprocessed for the model: float32 [n, 3, size, size]."""
    imgs = generate_images(n, seed, size=pre.input_size, grayscale=pre.color == "L")
    return to_input(imgs, pre)
