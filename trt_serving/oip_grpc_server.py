"""The Open Inference Protocol over gRPC (KServe v2 ``inference.GRPCInferenceService``).

Runs in the pod's event loop beside the HTTP app, on its own port (``SERVESTACK_HASHER_GRPC_PORT``),
and calls the same :mod:`trt_serving.oip_core` and :class:`DataPlane` as ``/v2`` over HTTP: a
``tritonclient.grpc`` user gets the codes a ``tritonclient.http`` user gets. Inputs come as
``raw_input_contents`` (what tritonclient sends) or typed ``contents``; outputs go back as
``raw_output_contents``. Errors carry the gRPC status matching the HTTP status and the message
``"<code>: <message>"``, as the HTTP OIP error string does. gRPC health checking
(``grpc.health.v1.Health/Check``) answers Kubernetes gRPC probes on the same port.

The messages come from ``oip_grpc/oip_v2.proto`` (see ``trt_serving/oip_grpc/__init__.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np

from trt_serving import oip_core
from trt_serving import oip_grpc as pb
from trt_serving.dataplane import DataPlane
from trt_serving.errors import HasherError, Overloaded

log = logging.getLogger(__name__)
_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def _metadata_tensor(entry: dict[str, Any]) -> Any:
    return pb.ModelMetadataResponse.TensorMetadata(name=entry["name"], datatype=entry["datatype"],
                                                   shape=entry["shape"])


def _param(value: object) -> Any:
    if isinstance(value, bool):
        return pb.InferParameter(bool_param=value)
    if isinstance(value, int):
        return pb.InferParameter(int64_param=value)
    return pb.InferParameter(string_param=str(value))


class HealthServicer:
    """Service "" (the pod): SERVING while live, i.e. unless no engine can ever load; the OIP service
    name: SERVING once an engine serves. Others: NOT_FOUND, as the health protocol says."""

    def __init__(self, dataplane: DataPlane):
        self.dp = dataplane

    async def Check(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        status = pb.HealthCheckResponse.ServingStatus
        if request.service == "":
            ok = self.dp.load_error is None
        elif request.service == pb.SERVICE:
            ok = self.dp.serving is not None
        else:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return pb.HealthCheckResponse(status=status.Value("SERVING" if ok else "NOT_SERVING"))


class OipServicer:
    """One method per RPC; each maps the pod's errors to gRPC statuses."""

    def __init__(self, dataplane: DataPlane):
        self.dp = dataplane

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerLiveResponse(live=self.dp.load_error is None)

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerReadyResponse(ready=self.dp.serving is not None)

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        oip_core.check_model(self.dp, request.name, request.version)
        return pb.ModelReadyResponse(ready=self.dp.serving is not None)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerMetadataResponse(name=oip_core.SERVER_NAME, version=oip_core.SERVER_VERSION)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        oip_core.check_model(self.dp, request.name, request.version)
        md = oip_core.model_metadata(self.dp)
        return pb.ModelMetadataResponse(
            name=md["name"], versions=md["versions"], platform=md["platform"],
            inputs=[_metadata_tensor(t) for t in md["inputs"]], outputs=[_metadata_tensor(t) for t in md["outputs"]],
        )

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        dp = self.dp
        oip_core.check_model(dp, request.model_name, request.model_version)
        dp.require()
        oip_core.check_one_input(len(request.inputs))
        tensor = request.inputs[0]
        oip_core.check_datatype(tensor.datatype)
        raw = request.raw_input_contents[0] if request.raw_input_contents else None
        if tensor.datatype == "BYTES":
            images = oip_core.split_bytes(raw) if raw is not None else list(tensor.contents.bytes_contents)
            inputs = await oip_core.images_input(dp, images)
        else:
            values = raw if raw is not None else list(tensor.contents.fp32_contents)
            inputs = oip_core.tensor_input(dp, oip_core.fp32_tensor(values, list(tensor.shape)))
        outputs = await oip_core.infer(dp, inputs, [o.name for o in request.outputs])
        response = pb.ModelInferResponse(model_name=dp.settings.model, model_version=dp.settings.version,
                                         id=request.id)
        for key, value in oip_core.engine_parameters(dp).items():
            response.parameters[key].CopyFrom(_param(value))
        for out in outputs:
            response.outputs.add(name=out.name, datatype=out.datatype, shape=list(out.array.shape))
            response.raw_output_contents.append(out.raw())
        return response


def _wrap(method: Callable[[Any, Any], Awaitable[Any]]) -> Callable[[Any, Any], Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(request, context)
        except HasherError as exc:
            trailer = (("retry-after", exc.headers["Retry-After"]),) if isinstance(exc, Overloaded) else ()
            await context.abort(_STATUS.get(exc.status, grpc.StatusCode.INTERNAL), f"{exc.code}: {exc.message}",
                                trailing_metadata=trailer)
    return handler


def generic_handler(service: str, servicer: object) -> grpc.GenericRpcHandler:
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            _wrap(getattr(servicer, name)), request_deserializer=req.FromString,
            response_serializer=resp.SerializeToString)
        for name, (req, resp) in pb.rpcs(service).items()
    }
    return grpc.method_handlers_generic_handler(service, handlers)


async def start_grpc_server(dataplane: DataPlane, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    """Start serving on ``host:port`` (0: any free port) in the running loop; returns the bound port."""
    # The largest valid request: MAX_IMAGES images at the per-image byte limit, with their prefixes.
    limit = min(2**31 - 1, oip_core.MAX_IMAGES * (dataplane.settings.max_image_bytes + 4) + 65536)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", limit)])
    server.add_generic_rpc_handlers((generic_handler(pb.SERVICE, OipServicer(dataplane)),
                                     generic_handler(pb.HEALTH_SERVICE, HealthServicer(dataplane))))
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"gRPC: cannot bind {host}:{port}")
    await server.start()
    log.info("OIP gRPC serving", extra={"port": bound})
    return server, bound


async def stop_grpc_server(server: grpc.aio.Server, grace_s: float = 5.0) -> None:
    await server.stop(grace_s)


def as_array(response: Any, name: str) -> np.ndarray:
    """An output of a response as numpy (for clients without tritonclient: the bench, tests)."""
    for i, out in enumerate(response.outputs):
        if out.name == name:
            dtype = "<f4" if out.datatype == "FP32" else np.uint8
            return np.frombuffer(response.raw_output_contents[i], dtype=dtype).reshape(list(out.shape))
    raise KeyError(name)
