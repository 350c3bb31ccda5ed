"""A bare grpc.aio unary echo server: the baseline of the gRPC benchmarks.

One generic handler (``/bench.Echo/Echo``, bytes in, the same bytes out: no protobuf,
no interceptors), the same process model as ``agent-staking serve --workers N``
(fresh interpreters sharing the port through ``SO_REUSEPORT``) and the same server
options (message size limits). Prints ``{"listening": ..., "workers": [pids]}`` once
every worker listens; SIGTERM or SIGINT stops every worker.

Run: ``python -m bench.echo_server --listen 127.0.0.1:50099 [--workers 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence

import grpc

METHOD = "/bench.Echo/Echo"
MAX_MESSAGE_BYTES = 1_048_576


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def serve_one(listen: str, reuse_port: bool) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ]
    )
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"could not bind {listen}")
    await server.start()
    print(json.dumps({"listening": listen.rsplit(":", 1)[0] + f":{port}"}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1)


async def serve_workers(listen: str, workers: int) -> None:
    if listen.endswith(":0"):
        raise SystemExit("--workers N > 1 needs a concrete port")
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.echo_server",
            "--listen",
            listen,
            "--worker-process",
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(workers)
    ]
    for process in processes:
        assert process.stdout is not None
        if not await asyncio.wait_for(process.stdout.readline(), 60):
            raise SystemExit(f"echo worker {process.pid} did not start")
    print(
        json.dumps({"listening": listen, "workers": [p.pid for p in processes]}),
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    await asyncio.gather(*(p.wait() for p in processes))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:50099")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--worker-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker_process or args.workers == 1:
        asyncio.run(serve_one(args.listen, reuse_port=args.worker_process))
    else:
        asyncio.run(serve_workers(args.listen, args.workers))


if __name__ == "__main__":
    main()
