"""HasherClient over a plain httpx.AsyncClient (MockTransport as the pod): parsing, errors, no torch import."""

from __future__ import annotations

import base64
import subprocess
import sys

import httpx
import pytest

from trt_serving.client import HasherClient, HasherRejected, HasherUnavailable

ENGINE = {"model": "face", "version": "2", "backend": "openvino", "precision": "int8", "fallback_from": []}


async def test_hash_sends_base64_and_parses() -> None:
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["body"] = request.read()
        seen["trace"] = request.headers.get("traceparent")
        return httpx.Response(200, json={"engine": ENGINE, "codes": ["00" * 16]})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        res = await HasherClient(http).hash("http://pod/", [base64.b64encode(b"\x01\x02").decode()], timeout_s=1,
                                            headers={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})
    assert res.codes == ["00" * 16] and res.engine.precision == "int8"
    assert base64.b64encode(b"\x01\x02").decode() in seen["body"].decode()
    assert seen["trace"].startswith("00-111")


@pytest.mark.parametrize(("status", "exc"), [(400, HasherRejected), (413, HasherRejected),
                                             (503, HasherUnavailable), (500, HasherUnavailable)])
async def test_status_maps_to_error_class(status: int, exc: type[Exception]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": {"code": "x_code", "message": "nope"}},
                              headers={"Retry-After": "3"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(exc) as info:
            await HasherClient(http).hash("http://pod", ["eA=="], timeout_s=1)
    assert info.value.status == status and info.value.code == "x_code"
    if status == 503:
        assert info.value.retry_after_s == 3.0


async def test_connect_error_and_timeout_are_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    for handler in (refuse, slow):
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            with pytest.raises(HasherUnavailable):
                await HasherClient(http).hash("http://pod", ["eA=="], timeout_s=0.1)
            assert await HasherClient(http).ready("http://pod", timeout_s=0.1) is False


async def test_ready() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v2/health/ready"
        return httpx.Response(200, json={"ready": True})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        assert await HasherClient(http).ready("http://pod", timeout_s=1) is True


def test_client_and_schemas_import_without_torch() -> None:
    code = ("import sys, trt_serving.client, trt_serving.schemas; "
            "heavy = [m for m in ('torch', 'openvino', 'onnxruntime', 'numpy') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
