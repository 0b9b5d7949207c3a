"""router.bodylimit and the image size limit: 413 JSON before anything too large is parsed."""

from __future__ import annotations

from tests.router.support.fakes import AUTH, assert_error, b64, running_router


async def test_body_and_image_size_limits(tmp_path):
    async with running_router(tmp_path, max_body_bytes=2000, max_image_bytes=500) as router:
        big = {"subject_id": "a", "face": b64(b"x" * 3000)}
        assert_error(await router.client.post("/v1/verify", json=big, headers=AUTH), 413, "payload_too_large")

        async def chunked():
            yield b'{"subject_id": "a", "face": "'
            for _ in range(10):
                yield b"A" * 400
            yield b'"}'

        r = await router.client.post("/v1/verify", content=chunked(),
                                     headers={**AUTH, "content-type": "application/json"})
        assert_error(r, 413, "payload_too_large")
        image = {"subject_id": "a", "face": b64(b"x" * 900)}
        assert_error(await router.client.post("/v1/verify", json=image, headers=AUTH), 413, "payload_too_large")
