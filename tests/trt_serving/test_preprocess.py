"""Image decoding: each kind of bad image gets its own 400 code; good modes convert faithfully."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from trt_serving.errors import InvalidImage
from trt_serving.model.hasher import Preprocessing
from trt_serving.preprocess import ImageLimits, decode

RGB = Preprocessing()
GRAY = Preprocessing(color="L")
LIMITS = ImageLimits(max_bytes=1_000_000, max_pixels=1_000_000)


def encode(array: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    img.save(buf, fmt)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG with a valid IHDR claiming width x height and no pixel data (zero-size / bomb probes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def code_of(data: bytes, pre: Preprocessing = RGB, limits: ImageLimits = LIMITS) -> str:
    with pytest.raises(InvalidImage) as info:
        decode(data, pre, limits)
    assert info.value.status == 400 and info.value.message
    return info.value.code


def test_good_image_shape_and_normalisation() -> None:
    x = decode(encode(np.full((50, 80, 3), 255, np.uint8)), RGB, LIMITS)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    assert np.allclose(x[:, 0, 0], [(1 - m) / s for m, s in zip(RGB.mean, RGB.std, strict=True)], atol=1e-5)


@pytest.mark.parametrize("pre", [RGB, GRAY, Preprocessing(mean=(0.1, 0.5, 0.9), std=(0.2, 0.3, 0.4))])
def test_normalisation_is_the_elementwise_formula_bit_for_bit(pre: Preprocessing) -> None:
    # Every byte value in every channel, at the model's size (no resampling): the lookup table
    # must give exactly (v / 255 - mean[c]) / std[c] in float32, in CHW order.
    arr = np.random.default_rng(3).permutation(np.arange(224 * 224 * 3) % 256).astype(np.uint8).reshape(224, 224, 3)
    x = decode(encode(arr), pre, LIMITS)
    pixels = np.asarray(Image.fromarray(arr).convert(pre.color), np.float32) / 255.0
    if pre.color == "L":
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    expected = ((pixels - np.array(pre.mean, np.float32)) / np.array(pre.std, np.float32)).transpose(2, 0, 1)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32 and x.flags.c_contiguous
    assert np.array_equal(x, expected)


def test_grayscale_replicated_and_rgba_on_white() -> None:
    arr = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    x = decode(encode(arr), GRAY, LIMITS)
    assert np.allclose((x[0] * GRAY.std[0]) + GRAY.mean[0], (x[1] * GRAY.std[1]) + GRAY.mean[1], atol=1e-5)
    rgba = np.zeros((20, 20, 4), np.uint8)  # fully transparent
    white = decode(encode(rgba), RGB, LIMITS)
    assert np.allclose(white, decode(encode(np.full((20, 20, 3), 255, np.uint8)), RGB, LIMITS))


def test_jpeg_and_palette_accepted() -> None:
    arr = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    assert decode(encode(arr, "JPEG"), RGB, LIMITS).shape == (3, 224, 224)
    assert decode(encode(arr, "PNG", mode="P"), RGB, LIMITS).shape == (3, 224, 224)


def test_bad_images_have_distinct_codes() -> None:
    good = encode(np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    assert code_of(b"") == "empty_image"
    assert code_of(b"definitely not an image") == "not_an_image"
    assert code_of(good[: len(good) // 2]) == "truncated_image"
    assert code_of(good, limits=ImageLimits(max_bytes=100, max_pixels=10**6)) == "image_too_large"
    assert code_of(good, limits=ImageLimits(max_bytes=10**6, max_pixels=64 * 63)) == "too_many_pixels"
    assert code_of(_png_header_only(30_000, 30_000)) == "too_many_pixels"  # refused before decoding
    buf = io.BytesIO()
    Image.new("I;16", (8, 8)).save(buf, "PNG")
    assert code_of(buf.getvalue()) == "unsupported_mode"
    buf = io.BytesIO()
    Image.new("CMYK", (8, 8)).save(buf, "JPEG")
    assert code_of(buf.getvalue()) == "unsupported_mode"



def test_zero_dimension_headers_are_refused() -> None:
    # Pillow refuses 0-wide/0-high images while identifying them (PNG, GIF, PPM alike), so they
    # are "not an image"; a 0-byte payload is "empty_image". Both are 400s, never a crash.
    assert code_of(_png_header_only(0, 10)) == "not_an_image"
    assert code_of(_png_header_only(0, 0)) == "not_an_image"
