"""Decode and preprocess one encoded image, refusing bad input with a precise reason.

Each image is decoded on its own (in the decode worker pool), so a bad image fails only its own
request. Checks run cheapest first: byte size, then the header (format, mode, dimensions) before
any pixel is decoded, then the full decode (which catches truncated files).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from trt_serving.errors import InvalidImage
from trt_serving.model.hasher import Preprocessing

# Modes we can convert faithfully to RGB / L. 16-bit, float and CMYK images are refused rather than
# silently tone-mapped: their codes would not match what the sender meant.
SUPPORTED_MODES = frozenset({"RGB", "RGBA", "RGBX", "L", "LA", "P", "PA", "1"})
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000


def _open(data: bytes, limits: ImageLimits) -> Image.Image:
    if len(data) == 0:
        raise InvalidImage("empty_image", "image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise InvalidImage("image_too_large", f"image is {len(data)} bytes; the limit is {limits.max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage("too_many_pixels", f"image has too many pixels: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage("not_an_image", "data is not an image in a format we can read "
                           "(JPEG, PNG, WebP, BMP, TIFF ...)") from exc
    width, height = img.size
    if width <= 0 or height <= 0:
        raise InvalidImage("zero_size_image", f"image has zero size ({width}x{height})")
    if width * height > limits.max_pixels:
        raise InvalidImage("too_many_pixels",
                           f"image is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}")
    if img.mode not in SUPPORTED_MODES:
        raise InvalidImage("unsupported_mode",
                           f"image mode {img.mode!r} is not supported; use one of {sorted(SUPPORTED_MODES)}")
    return img


def decode(data: bytes, pre: Preprocessing, limits: ImageLimits) -> np.ndarray:
    """Encoded image -> normalised float32 [3, size, size] for the model.

    Raises:
        InvalidImage: with a snake_case code and a message the client can act on.
    """
    img = _open(data, limits)
    size = (pre.input_size, pre.input_size)
    try:
        img.draft("L" if pre.color == "L" else "RGB", size)  # JPEG: decode at a reduced scale, much faster
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage("truncated_image", f"image data is truncated or corrupt: {exc}") from exc
    if img.mode in ("RGBA", "LA", "PA", "P"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)  # transparent pixels count as white, not black
    img = img.convert(pre.color).resize(size, Image.Resampling.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / 255.0
    if pre.color == "L":
        x = np.repeat(x[..., None], 3, axis=-1)
    x = (x - np.array(pre.mean, dtype=np.float32)) / np.array(pre.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def load_directory(directory: Path, pre: Preprocessing, *, limit: int,
                   limits: ImageLimits | None = None) -> tuple[np.ndarray, list[str]]:
    """Up to ``limit`` images of a directory (sorted names), preprocessed; for INT8 calibration."""
    paths = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not paths:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {directory}")
    lim = limits or ImageLimits(max_bytes=1 << 30, max_pixels=1 << 31)
    arrays = [decode(p.read_bytes(), pre, lim) for p in paths]
    return np.stack(arrays), [str(p.relative_to(directory)) for p in paths]
