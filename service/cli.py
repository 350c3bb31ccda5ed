"""The `agent-staking` command line: serve, localnet, keys."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from service.config import load_settings, parse_host_port
from service.localnet import LocalnetConfig, LocalnetServer

log = logging.getLogger("agent_staking")


def parse_listen(value: str) -> tuple[str, int]:
    try:
        return parse_host_port(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_localnet_args(parser: argparse.ArgumentParser) -> None:
    defaults = LocalnetConfig()
    parser.add_argument(
        "--validators",
        type=int,
        default=defaults.validators,
        help="validator vote accounts created at genesis, one of them delinquent",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="seed of every genesis key: the same seed gives the same cluster",
    )
    parser.add_argument(
        "--slot-ms",
        type=int,
        default=int(defaults.slot_duration * 1000),
        help="milliseconds per slot; 0 makes one slot per transaction",
    )
    parser.add_argument(
        "--slots-per-epoch",
        type=int,
        default=defaults.slots_per_epoch,
        help="slots per epoch",
    )


def localnet_config(args: argparse.Namespace) -> LocalnetConfig:
    return LocalnetConfig(
        validators=args.validators,
        seed=args.seed,
        slot_duration=args.slot_ms / 1000,
        slots_per_epoch=args.slots_per_epoch,
    )


async def wait_for_signal() -> None:
    """Return when SIGINT or SIGTERM arrives."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _run_localnet(args: argparse.Namespace) -> None:
    server = LocalnetServer(localnet_config(args))
    host, port = args.listen
    await server.start(host, port)
    info = await server.call(lambda chain: chain.validators)
    print(
        json.dumps(
            {
                "localnet": server.url,
                "faucet": str(server.chain.faucet),
                "validators": [
                    {
                        "vote_account": str(v.vote_account),
                        "identity": str(v.identity),
                        "commission": v.commission,
                        "delinquent": v.delinquent,
                    }
                    for v in info
                ],
            }
        ),
        flush=True,
    )
    log.info("localnet listening on %s", server.url)
    try:
        await wait_for_signal()
    finally:
        await server.stop()


async def _run_serve(args: argparse.Namespace) -> None:
    from service.server import AgentStakingServer

    overrides: dict[str, object] = {"listen": args.listen, "rpc_urls": args.rpc_url or None}
    settings = load_settings(overrides, args.config)
    server = AgentStakingServer(settings)
    try:
        await server.start()
    except BaseException:
        await server.stop(0)
        raise
    print(
        json.dumps(
            {
                "listening": f"{parse_host_port(settings.listen)[0]}:{server.port}",
                "solana_rpc": server.rpc_url if server.localnet is not None else "external",
                "embedded_localnet": server.localnet is not None,
            }
        ),
        flush=True,
    )
    stopper = asyncio.create_task(wait_for_signal())
    waiter = asyncio.create_task(server.wait())
    await asyncio.wait({stopper, waiter}, return_when=asyncio.FIRST_COMPLETED)
    log.info(
        "draining: health NOT_SERVING, calls in flight get %ss", settings.shutdown_grace_seconds
    )
    await server.stop()
    stopper.cancel()
    waiter.cancel()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent-staking", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC service")
    serve.add_argument(
        "--listen", help="HOST:PORT for gRPC (default 127.0.0.1:50051; env AGENT_STAKING_LISTEN)"
    )
    serve.add_argument(
        "--rpc-url",
        action="append",
        metavar="URL",
        help="Solana JSON-RPC endpoint; without one the embedded localnet is started",
    )
    serve.add_argument(
        "--config", type=Path, help="TOML settings file (env AGENT_STAKING_CONFIG_FILE)"
    )

    localnet = commands.add_parser(
        "localnet", help="run a Solana JSON-RPC endpoint backed by an in-process LiteSVM cluster"
    )
    localnet.add_argument(
        "--listen",
        type=parse_listen,
        default=parse_listen("127.0.0.1:8899"),
        help="HOST:PORT to listen on (default 127.0.0.1:8899)",
    )
    _add_localnet_args(localnet)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    try:
        if args.command == "localnet":
            asyncio.run(_run_localnet(args))
        elif args.command == "serve":
            asyncio.run(_run_serve(args))
    except (ValueError, OSError) as exc:
        print(f"agent-staking: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
