"""gRPC on a real pod process (`python -m trt_serving` with SERVESTACK_HASHER_GRPC_PORT): a stock
client (tritonclient.grpc) gets the codes and error codes tritonclient.http gets, and the gRPC health
service answers what Kubernetes probes ask."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def pod(fingerprint_pod: tuple[str, str]) -> tuple[str, str]:
    return fingerprint_pod


def test_tritonclient_grpc_gets_the_same_codes_and_errors_as_http(pod: tuple[str, str], helpers) -> None:  # noqa: ANN001
    import tritonclient.grpc as tgrpc
    import tritonclient.http as thttp
    from tritonclient.utils import InferenceServerException

    url, target = pod
    imgs = helpers.sample_images(4, seed=23)
    http, grpc_client = thttp.InferenceServerClient(url.removeprefix("http://")), tgrpc.InferenceServerClient(target)
    assert grpc_client.is_server_live() and grpc_client.is_server_ready()
    assert grpc_client.is_model_ready("fingerprint", "1") and grpc_client.is_model_ready("fingerprint")
    md = grpc_client.get_model_metadata("fingerprint", "1", as_json=True)
    assert md["name"] == "fingerprint" and md["versions"] == ["1"] and md["platform"] == "servestack_openvino"
    assert [(t["name"], t["datatype"]) for t in md["outputs"]] == [("codes", "UINT8"), ("features", "FP32")]
    assert grpc_client.get_server_metadata(as_json=True)["name"] == "servestack-hasher"

    def run(mod, client, data: np.ndarray, datatype: str, name: str, outputs: list[str]):  # noqa: ANN001, ANN202
        inp = mod.InferInput(name, list(data.shape), datatype)
        inp.set_data_from_numpy(data)
        return client.infer("fingerprint", [inp], model_version="1", request_id="r-7",
                            outputs=[mod.InferRequestedOutput(o) for o in outputs])

    images = np.array(imgs, dtype=np.object_)
    via_http = run(thttp, http, images, "BYTES", "images", ["codes", "features"])
    via_grpc = run(tgrpc, grpc_client, images, "BYTES", "images", ["codes", "features"])
    assert via_grpc.as_numpy("codes").dtype == np.uint8 and via_grpc.as_numpy("codes").shape == (4, 16)
    np.testing.assert_array_equal(via_grpc.as_numpy("codes"), via_http.as_numpy("codes"))
    np.testing.assert_array_equal(via_grpc.as_numpy("features"), via_http.as_numpy("features"))
    assert via_grpc.get_response().id == "r-7"
    assert via_grpc.get_response().parameters["backend"].string_param == "openvino"
    # Already preprocessed FP32 tensors (raw_input_contents) give the same codes over both protocols.
    size = int(md["inputs"][1]["shape"][-1])  # int64 fields come as JSON strings
    x = np.random.default_rng(5).standard_normal((2, 3, size, size)).astype(np.float32)
    fp_grpc = run(tgrpc, grpc_client, x, "FP32", "input", ["codes"]).as_numpy("codes")
    np.testing.assert_array_equal(fp_grpc, run(thttp, http, x, "FP32", "input", ["codes"]).as_numpy("codes"))
    assert fp_grpc.shape == (2, 16)

    # The same mistakes: HTTP status <-> gRPC status, the same error code in the message.
    bad = np.array([b"not an image"], dtype=np.object_)
    cases = [
        (lambda mod, c: run(mod, c, bad, "BYTES", "images", ["codes"]), "400", "INVALID_ARGUMENT", "not_an_image"),
        (lambda mod, c: c.get_model_metadata("face"), "404", "NOT_FOUND", "model_not_found"),
        (lambda mod, c: c.get_model_metadata("fingerprint", "9"), "404", "NOT_FOUND", "model_not_found"),
        (lambda mod, c: run(mod, c, images, "BYTES", "images", ["logits"]), "400", "INVALID_ARGUMENT",
         "invalid_request"),
        (lambda mod, c: run(mod, c, np.zeros((1, 3, 8, 8), np.float32), "FP32", "input", ["codes"]), "400",
         "INVALID_ARGUMENT", "invalid_shape"),
    ]
    for call, http_status, grpc_status, code in cases:
        for mod, client, status in ((thttp, http, http_status), (tgrpc, grpc_client, f"StatusCode.{grpc_status}")):
            with pytest.raises(InferenceServerException) as info:
                call(mod, client)
            assert info.value.status() == status, (code, mod.__name__, info.value)
            assert code in str(info.value), (mod.__name__, info.value)
    http.close()
    grpc_client.close()


def test_grpc_health_checks_answer_kubernetes_probes(pod: tuple[str, str]) -> None:
    import grpc

    from trt_serving import oip_grpc as pb

    with grpc.insecure_channel(pod[1]) as channel:
        check = channel.unary_unary(f"/{pb.HEALTH_SERVICE}/Check",
                                    request_serializer=pb.HealthCheckRequest.SerializeToString,
                                    response_deserializer=pb.HealthCheckResponse.FromString)
        serving = pb.HealthCheckResponse.ServingStatus.Value("SERVING")
        assert check(pb.HealthCheckRequest(service=""), timeout=5).status == serving
        assert check(pb.HealthCheckRequest(service=pb.SERVICE), timeout=5).status == serving
        with pytest.raises(grpc.RpcError) as info:
            check(pb.HealthCheckRequest(service="nope"), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
