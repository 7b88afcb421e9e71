"""protoc plugin ``grpc_python``: generates ``*_pb2_grpc.py`` with the generator bundled in grpcio-tools.

No ``protoc-gen-grpc_python`` executable is published on any package registry, so this plugin
receives the ``CodeGeneratorRequest`` from buf (or protoc), hands the files to ``grpc_tools.protoc``
(in-process, through ``--descriptor_set_in``) and returns what it wrote. The output is byte-identical to
``python -m grpc_tools.protoc --grpc_python_out``. A plugin parameter (e.g. ``grpc_2_0``) is passed on.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2


def generate(request: plugin_pb2.CodeGeneratorRequest) -> plugin_pb2.CodeGeneratorResponse:
    """Run grpc_tools' grpc_python generator on the request's files."""
    from grpc_tools import protoc  # imported lazily: it loads the bundled protoc

    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    with tempfile.TemporaryDirectory(prefix="protoc-gen-grpc-python-") as tmp:
        tmp_path = Path(tmp)
        descriptor_set = tmp_path / "request.binpb"
        descriptor_set.write_bytes(
            descriptor_pb2.FileDescriptorSet(file=request.proto_file).SerializeToString(deterministic=True)
        )
        out_dir = tmp_path / "out"
        out_dir.mkdir()
        parameter = f"{request.parameter}:" if request.parameter else ""
        args = [
            "grpc_tools.protoc",
            f"--descriptor_set_in={descriptor_set}",
            f"--grpc_python_out={parameter}{out_dir}",
            *request.file_to_generate,
        ]
        if protoc.main(args) != 0:
            response.error = "grpc_tools.protoc failed to generate the gRPC stubs (see its messages above)"
            return response
        for path in sorted(p for p in out_dir.rglob("*") if p.is_file()):
            response.file.add(name=path.relative_to(out_dir).as_posix(), content=path.read_text("utf-8"))
    return response


def main() -> None:
    """Plugin entry point: request on stdin, response on stdout."""
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    sys.stdout.buffer.write(generate(request).SerializeToString())


if __name__ == "__main__":
    main()
