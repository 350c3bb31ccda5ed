"""Server reflection (v1 and v1alpha) that serves our protos with their comments.

grpcio-reflection answers from the descriptors compiled into the *_pb2 modules,
which carry no source info, so `describe` would show no documentation. This
servicer answers our own files from the generated FileDescriptorSet (comments
included) and everything else from the default pool. grpcio-reflection ships
only the v1alpha service; v1 has the same messages, so the same handler serves
it under the v1 name, and its file (for `describe`) is v1alpha's renamed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
from agentstaking.v1 import descriptor_set
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer

V1_SERVICE = "grpc.reflection.v1.ServerReflection"
V1ALPHA_SERVICE = "grpc.reflection.v1alpha.ServerReflection"


def _v1_reflection_file() -> bytes:
    """grpc/reflection/v1/reflection.proto: v1alpha's file under v1's package."""
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    alpha = f".{proto.package}."
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = "grpc.reflection.v1"
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):  # set only on message fields
                field.type_name = field.type_name.replace(alpha, ".grpc.reflection.v1.")
    for method in proto.service[0].method:
        method.input_type = method.input_type.replace(alpha, ".grpc.reflection.v1.")
        method.output_type = method.output_type.replace(alpha, ".grpc.reflection.v1.")
    return proto.SerializeToString()


def _add_v1_reflection_file() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName("grpc/reflection/v1/reflection.proto")
    except KeyError:
        pool.AddSerializedFile(_v1_reflection_file())


def _documented_files() -> dict[str, bytes]:
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.FILE_DESCRIPTOR_SET)
    return {f.name: f.SerializeToString() for f in files.file}


class DocumentedReflectionServicer(ReflectionServicer):  # type: ignore[misc]
    """Reflection whose file descriptors carry the proto comments."""

    def __init__(self, service_names: Iterable[str]) -> None:
        _add_v1_reflection_file()
        super().__init__(list(service_names))
        self._documented = _documented_files()

    def _respond(
        self, descriptor: FileDescriptor, request: reflection_pb2.ServerReflectionRequest
    ) -> reflection_pb2.ServerReflectionResponse:
        files: dict[str, FileDescriptor] = {}
        pending = [descriptor]
        while pending:
            current = pending.pop()
            if current.name in files:
                continue
            files[current.name] = current
            pending.extend(current.dependencies)
        serialized = []
        for name, file in files.items():
            if name in self._documented:
                serialized.append(self._documented[name])
            else:
                proto = descriptor_pb2.FileDescriptorProto()
                file.CopyToProto(proto)
                serialized.append(proto.SerializeToString())
        return reflection_pb2.ServerReflectionResponse(
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(
                file_descriptor_proto=serialized
            ),
            original_request=request,
        )

    def _file_by_filename(self, request: Any, filename: str) -> Any:
        try:
            descriptor = self._pool.FindFileByName(filename)
        except KeyError:
            return super()._file_by_filename(request, filename)
        return self._respond(descriptor, request)

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        try:
            descriptor = self._pool.FindFileContainingSymbol(fully_qualified_name)
        except KeyError:
            return super()._file_containing_symbol(request, fully_qualified_name)
        return self._respond(descriptor, request)


def add_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serve reflection v1 and v1alpha for `service_names` (both names listed too)."""
    names = [*service_names, V1_SERVICE, V1ALPHA_SERVICE]
    servicer = DocumentedReflectionServicer(names)

    def handler() -> grpc.RpcMethodHandler[Any, Any]:
        return grpc.stream_stream_rpc_method_handler(
            _stream(servicer),
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )

    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(service, {"ServerReflectionInfo": handler()})
            for service in (V1_SERVICE, V1ALPHA_SERVICE)
        ]
    )


def _stream(servicer: DocumentedReflectionServicer) -> Any:
    async def info(
        requests: AsyncIterator[reflection_pb2.ServerReflectionRequest], context: Any
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        async for response in servicer.ServerReflectionInfo(requests, context):
            yield response

    return info
