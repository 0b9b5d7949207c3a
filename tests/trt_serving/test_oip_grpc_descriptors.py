"""The committed descriptor set is what the committed .proto files compile to (`make grpc-stubs`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

from trt_serving import oip_grpc


def test_descriptor_set_matches_the_proto_files(tmp_path: Path) -> None:
    out = tmp_path / "descriptors.binpb"
    folder = oip_grpc.DESCRIPTOR_SET.parent
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{folder}", f"--descriptor_set_out={out}",
                    *oip_grpc.PROTO_FILES], check=True, cwd=folder, timeout=60)
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    committed = descriptor_pb2.FileDescriptorSet.FromString(oip_grpc.DESCRIPTOR_SET.read_bytes())
    assert fresh == committed, "trt_serving/oip_grpc/*.proto changed: run `make grpc-stubs` and commit the result"
    assert [f.name for f in committed.file] == list(oip_grpc.PROTO_FILES)


def test_messages_keep_the_protocol_wire_names() -> None:
    # What clients of the protocol rely on: service path, RPC names, field numbers of the tensors.
    assert list(oip_grpc.rpcs(oip_grpc.SERVICE)) == ["ServerLive", "ServerReady", "ModelReady", "ServerMetadata",
                                                    "ModelMetadata", "ModelInfer"]
    fields = {f.name: f.number for f in oip_grpc.ModelInferRequest.DESCRIPTOR.fields}
    assert fields == {"model_name": 1, "model_version": 2, "id": 3, "parameters": 4, "inputs": 5, "outputs": 6,
                      "raw_input_contents": 7}
    response = {f.name: f.number for f in oip_grpc.ModelInferResponse.DESCRIPTOR.fields}
    assert response["raw_output_contents"] == 6 and response["outputs"] == 5
