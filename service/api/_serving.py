"""How servicers are added to a grpc.aio server."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc

S = TypeVar("S")


class _GenericHandlersOnly:
    """The part of a server the generated ``add_*Servicer_to_server`` functions use,
    passing on the generic handler and leaving out the registered methods."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        """Left out: the generic handler serves the same methods."""


def add_servicer(add: Callable[[S, Any], None], servicer: S, server: grpc.aio.Server) -> None:
    """``add(servicer, server)`` (a generated ``add_*Servicer_to_server``) with the
    service's methods served by its generic handler alone.

    grpc.aio keeps one pending call request for each registered method and, for every
    call that arrives, waits on all of them again (``asyncio.wait`` over every
    registered method of the server: 42 futures here, on every call); the generic
    handlers need one. Finding a method is a dict lookup per service either way.
    """
    add(servicer, _GenericHandlersOnly(server))
