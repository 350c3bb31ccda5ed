"""The `agent-staking` command line: serve, localnet, keys."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence

from service.localnet import LocalnetConfig, LocalnetServer

log = logging.getLogger("agent_staking")


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent-staking", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

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
    if args.command == "localnet":
        asyncio.run(_run_localnet(args))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
