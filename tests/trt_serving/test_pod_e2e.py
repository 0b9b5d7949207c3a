"""A real pod process (`python -m trt_serving`) and a stock OIP client (tritonclient.http)."""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.procs import free_port, process

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def pod_url(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    env = {"SERVESTACK_HASHER_MODEL": "fingerprint", "SERVESTACK_HASHER_VERSION": "1",
           "SERVESTACK_HASHER_PORT": str(port), "SERVESTACK_HASHER_CACHE_DIR": str(cache_dir),
           "SERVESTACK_HASHER_THREADS": "1", "OMP_NUM_THREADS": "1", "OTEL_SDK_DISABLED": "true"}
    url = f"http://127.0.0.1:{port}"
    with process([sys.executable, "-m", "trt_serving"], f"{url}/v2/health/ready",
                 tmp_path_factory.mktemp("pod") / "pod.log", env=env, timeout_s=300, stop_timeout_s=20):
        yield url


def test_tritonclient_gets_the_same_codes_as_v1_hash(pod_url: str, helpers) -> None:  # noqa: ANN001
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    imgs = helpers.sample_images(3, seed=11)
    v1 = httpx.post(f"{pod_url}/v1/hash", json={"images": [base64.b64encode(i).decode() for i in imgs]},
                    timeout=30).json()
    client = triton.InferenceServerClient(pod_url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("fingerprint", "1")
    md = client.get_model_metadata("fingerprint", "1")
    assert md["parameters"]["backend"] == v1["engine"]["backend"]
    inp = triton.InferInput("images", [3], "BYTES")
    inp.set_data_from_numpy(np.array(imgs, dtype=np.object_))
    result = client.infer("fingerprint", [inp], model_version="1",
                          outputs=[triton.InferRequestedOutput("codes")])
    codes = result.as_numpy("codes")
    assert codes.shape == (3, 16) and codes.dtype == np.uint8
    assert [row.tobytes().hex() for row in codes] == v1["codes"]

    bad = triton.InferInput("images", [1], "BYTES")
    bad.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_))
    with pytest.raises(InferenceServerException) as info:
        client.infer("fingerprint", [bad])
    assert info.value.status() == "400"
    assert "not_an_image" in str(info.value)
    client.close()


def test_metrics_served(pod_url: str) -> None:
    text = httpx.get(f"{pod_url}/metrics", timeout=5).text
    assert 'servestack_hasher_engine_info{backend="openvino",model="fingerprint",precision="int8",version="1"}' in text
