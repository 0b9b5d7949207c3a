"""The pod's HTTP API in process: /v1/hash, OIP JSON + binary, 400s, metrics, fallback, spans."""

from __future__ import annotations

import base64
import gc
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from trt_serving.app import create_app
from trt_serving.config import HasherSettings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pod(cache_dir: Path, helpers):  # noqa: ANN001, ANN201
    settings = HasherSettings(model="fingerprint", version="1", cache_dir=cache_dir, threads=2,
                              max_queue_delay_us=1000, max_image_pixels=2_000_000)
    app = create_app(settings)
    exporter = InMemorySpanExporter()
    app.state.telemetry.add_span_processor(SimpleSpanProcessor(exporter))
    with TestClient(app) as client:
        helpers.wait_ready(client)
        yield client, exporter


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_hash_returns_codes_and_engine(pod, helpers) -> None:  # noqa: ANN001
    client, _ = pod
    imgs = helpers.sample_images(3)
    r = client.post("/v1/hash", json={"images": [b64(i) for i in imgs], "include_features": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["engine"] == {"model": "fingerprint", "version": "1", "backend": "openvino", "precision": "int8",
                              "fallback_from": []}
    assert len(body["codes"]) == 3 and all(len(c) == 32 for c in body["codes"])
    assert len(set(body["codes"])) == 3  # different images, different codes
    assert len(body["features"][0]) == 512
    again = client.post("/v1/hash", json={"images": [b64(imgs[1])]}).json()
    assert again["codes"] == [body["codes"][1]]  # batch composition does not change a code


@pytest.mark.parametrize(("payload", "code"), [
    (b"not an image at all", "not_an_image"),
    (b"", "empty_image"),
])
def test_bad_images_are_400(pod, payload: bytes, code: str) -> None:  # noqa: ANN001
    client, _ = pod
    r = client.post("/v1/hash", json={"images": [b64(payload)]})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]


def test_bad_image_names_its_index_and_other_requests_still_work(pod, helpers) -> None:  # noqa: ANN001
    client, _ = pod
    good = helpers.sample_images(1)[0]
    r = client.post("/v1/hash", json={"images": [b64(good), b64(good[:300])]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "truncated_image"
    assert r.json()["error"]["message"].startswith("image 1:")
    big = helpers.sample_images(1, size=(1500, 1500))[0]  # 2.25 Mpx > the 2 Mpx limit set above
    r = client.post("/v1/hash", json={"images": [b64(big)]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_pixels"
    assert client.post("/v1/hash", json={"images": [b64(good)]}).status_code == 200


def test_malformed_requests_are_4xx_json(pod) -> None:  # noqa: ANN001
    client, _ = pod
    r = client.post("/v1/hash", json={"images": ["%%%"]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_base64"
    r = client.post("/v1/hash", json={"images": []})  # a schema error: 422, as in every component
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    # Under /v2 errors take the Open Inference Protocol's string form (tritonclient needs it).
    r = client.post("/v2/models/face/infer", json={"inputs": []})
    assert r.status_code == 404 and r.json()["code"] == "model_not_found"
    assert r.json()["error"].startswith("model_not_found: model 'face' is not served here")
    r = client.post("/v2/models/fingerprint/infer", content=b"{nope")
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"


def test_oip_metadata_reports_the_serving_engine(pod) -> None:  # noqa: ANN001
    client, _ = pod
    assert client.get("/v2/health/live").json() == {"live": True}
    md = client.get("/v2/models/fingerprint/versions/1").json()
    assert md["name"] == "fingerprint" and md["versions"] == ["1"]
    assert md["parameters"]["backend"] == "openvino" and md["parameters"]["precision"] == "int8"
    assert {"name": "codes", "datatype": "UINT8", "shape": [-1, 16]} in md["outputs"]
    assert client.get("/v2/models/fingerprint/versions/9").status_code == 404


def test_oip_json_and_binary_match_v1(pod, helpers) -> None:  # noqa: ANN001
    client, _ = pod
    imgs = helpers.sample_images(2, seed=9)
    v1 = client.post("/v1/hash", json={"images": [b64(i) for i in imgs]}).json()["codes"]
    body = {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [2], "data": [b64(i) for i in imgs]}],
            "outputs": [{"name": "codes"}]}
    r = client.post("/v2/models/fingerprint/infer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["shape"] == [2, 16] and out["datatype"] == "UINT8"
    assert [bytes(np.array(out["data"], np.uint8).reshape(2, 16)[k]).hex() for k in range(2)] == v1
    # Triton binary extension, as tritonclient.http sends it.
    raw = b"".join(struct.pack("<I", len(i)) + i for i in imgs)
    header = json.dumps({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [2],
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "parameters": {"binary_data_output": True}}).encode()
    r = client.post("/v2/models/fingerprint/infer", content=header + raw,
                    headers={"Inference-Header-Content-Length": str(len(header))})
    n = int(r.headers["Inference-Header-Content-Length"])
    head = json.loads(r.content[:n])
    sizes = [o["parameters"]["binary_data_size"] for o in head["outputs"]]
    assert [o["name"] for o in head["outputs"]] == ["codes", "features"] and sizes == [32, 2 * 512 * 4]
    codes = np.frombuffer(r.content[n:n + 32], np.uint8).reshape(2, 16)
    assert [row.tobytes().hex() for row in codes] == v1


def test_oip_fp32_tensor_input(pod) -> None:  # noqa: ANN001
    client, _ = pod
    x = np.zeros((1, 3, 224, 224), np.float32)
    header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224],
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "codes"}]}).encode()
    r = client.post("/v2/models/fingerprint/infer", content=header + x.tobytes(),
                    headers={"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [1, 16]
    bad = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 8, 8],
                                  "data": [0.0] * 192}]})
    r = client.post("/v2/models/fingerprint/infer", content=bad)
    assert r.status_code == 400 and r.json()["code"] == "invalid_shape"


def test_metrics_and_spans(pod, helpers) -> None:  # noqa: ANN001
    client, exporter = pod
    exporter.clear()
    assert client.post("/v1/hash", json={"images": [b64(helpers.sample_images(1)[0])]}).status_code == 200
    text = client.get("/metrics").text
    for name in ("servestack_hasher_requests_total{status=\"200\"}", "servestack_hasher_request_duration_seconds",
                 "servestack_hasher_queue_depth", "servestack_hasher_queue_wait_seconds",
                 "servestack_hasher_batch_size", "servestack_hasher_engine_duration_seconds",
                 "servestack_hasher_inflight_requests", "servestack_hasher_spans_dropped_total 0.0",
                 'servestack_hasher_engine_info{backend="openvino",model="fingerprint",'
                 'precision="int8",version="1"} 1.0'):
        assert name in text, name
    assert 'status="400"' in text
    spans = exporter.get_finished_spans()
    server = next(s for s in spans if s.name == "POST /v1/hash")
    batch = next(s for s in spans if s.name == "batch")
    decode = next(s for s in spans if s.name == "decode_preprocess")
    wait = next(s for s in spans if s.name == "queue_wait")
    assert decode.parent.span_id == server.context.span_id and wait.parent.span_id == server.context.span_id
    assert server.context.span_id in {link.context.span_id for link in batch.links}
    assert server.attributes["hasher.batch.id"] == batch.attributes["hasher.batch.id"]
    assert server.attributes["hasher.batch.size"] == 1


def test_loaded_pod_freezes_startup_objects_out_of_the_gc(pod) -> None:  # noqa: ANN001
    # Regression: under load at concurrency 64 every full collection walked ~220k start-up objects
    # (torch, OpenVINO, FastAPI) for ~165 ms with the GIL held; frozen, collections skip them.
    assert gc.get_freeze_count() > 100_000


def test_fallback_is_reported_everywhere(cache_dir: Path, helpers) -> None:  # noqa: ANN001
    settings = HasherSettings(model="fingerprint", version="1", cache_dir=cache_dir, threads=1,
                              backend="tensorrt", fallbacks=["cuda:fp16", "onnxruntime:fp32"])
    with TestClient(create_app(settings)) as client:
        helpers.wait_ready(client)
        md = client.get("/v2/models/fingerprint").json()["parameters"]
        assert md["backend"] == "onnxruntime" and md["precision"] == "fp32"
        assert md["fallback_from"] == "tensorrt:fp16,cuda:fp16"
        r = client.post("/v1/hash", json={"images": [b64(helpers.sample_images(1)[0])]}).json()
        assert r["engine"]["fallback_from"] == ["tensorrt:fp16", "cuda:fp16"]
        assert 'backend="onnxruntime"' in client.get("/metrics").text


def test_no_engine_means_not_ready_and_not_live(tmp_path: Path) -> None:
    settings = HasherSettings(model="fingerprint", version="1", cache_dir=tmp_path, backend="tensorrt",
                              fallbacks=[], build_missing=False)
    with TestClient(create_app(settings)) as client:
        client.app.state.loader  # noqa: B018 - the load task exists
        for _ in range(100):
            if client.app.state.dataplane.load_error:
                break
            import time

            time.sleep(0.05)
        r = client.get("/v2/health/ready")
        assert r.status_code == 503 and "tensorrt" in r.json()["error"]
        assert client.get("/v2/health/live").status_code == 503
        r = client.post("/v1/hash", json={"images": ["AAAA"]})
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready" and "Retry-After" in r.headers


def test_settings_parse_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVESTACK_HASHER_FALLBACKS", "onnxruntime:int8, torch")
    monkeypatch.setenv("SERVESTACK_HASHER_MODEL", "fingerprint")
    s = HasherSettings()
    assert s.candidates() == [("openvino", "int8"), ("onnxruntime", "int8"), ("torch", "fp32")]
    with pytest.raises(ValueError, match="unknown backend"):
        HasherSettings(backend="coreml")
