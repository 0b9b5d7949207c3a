"""router.schemas.check_image: strict base64 text, checked once and forwarded as received."""

from __future__ import annotations

import base64

import pytest

from router.errors import InvalidInput, PayloadTooLarge
from router.schemas import check_image


@pytest.mark.parametrize("raw", [b"x", b"xy", b"xyz", bytes(range(256)), b"\xff" * 1000])
def test_valid_base64_is_returned_as_the_same_text(raw: bytes) -> None:
    text = base64.b64encode(raw).decode()
    assert check_image(text, "face", 1000) is text


@pytest.mark.parametrize("text", ["not base64!", "eA=", "eA===", "e=A=", "eA==eA==", "eA\n==", '"A==', "é" * 4])
def test_anything_else_is_invalid_input_naming_the_field(text: str) -> None:
    with pytest.raises(InvalidInput, match="^images\\[0\\]: not valid base64$"):
        check_image(text, "images[0]", 1000)


def test_empty_and_oversized_images() -> None:
    with pytest.raises(InvalidInput, match="empty image"):
        check_image("", "face", 10)
    # The decoded size counts, padding excluded: 10 bytes pass a 10-byte limit, 11 do not.
    assert check_image(base64.b64encode(b"x" * 10).decode(), "face", 10)
    with pytest.raises(PayloadTooLarge, match="face: image larger than 10 bytes"):
        check_image(base64.b64encode(b"x" * 11).decode(), "face", 10)
    with pytest.raises(PayloadTooLarge):  # refused by its length before any scan
        check_image("A" * 10_000_000, "face", 10)
