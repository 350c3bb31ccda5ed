"""The `agent-staking` command line: serve, localnet, keys, mcp, receipt-key,
verify-receipt."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from service._startup import Startup, StartupError, StartupPolicy
from service.config import SERVE_FLAGS, Settings, load_settings, parse_host_port
from service.core.errors import DomainError
from service.core.programs import LAMPORTS_PER_SOL
from service.keys import ApiKey, KeyManager, KeyState, Scope, SqlKeyStore, open_store
from service.localnet import LocalnetConfig, LocalnetServer
from service.receipts import write_key_file
from service.store import Database, StoreUnavailableError, migrate
from service.telemetry import capture_stderr, configure_logging

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
    try:
        await server.start(host, port)
    except OSError as exc:
        from service.server import ListenError

        raise ListenError(f"{host}:{port}", "the localnet", "--listen", exc) from None
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

    overrides: dict[str, object] = {
        setting: getattr(args, flag.removeprefix("--").replace("-", "_"))
        for setting, flag in SERVE_FLAGS.items()
    }
    overrides["rpc_urls"] = overrides["rpc_urls"] or None  # repeatable: [] means unset
    settings = load_settings(overrides, args.config)
    if settings.workers > 1 and not args.worker_process:
        await _run_workers(args, settings)
        return
    if args.worker_process:
        _exit_with_parent()
    # JSON logs on stdout; the announcement below stays the first line of it.
    logs = configure_logging(
        level=settings.log_level,
        levels=settings.log_levels,
        fmt=settings.log_format,
        stream=sys.stdout,
    )
    # gRPC core writes to stderr directly: through the logs, it is redacted like them.
    stderr = capture_stderr()
    try:
        logs.hold()
        server = AgentStakingServer(settings)
        # SIGTERM during start-up (still waiting for a dependency) stops it cleanly too.
        stopper = asyncio.create_task(wait_for_signal())
        starting = asyncio.create_task(server.start(on_wait=logs.release_held))
        await asyncio.wait({stopper, starting}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            logs.release_held()
            log.info("stopped during start-up")
            await server.stop(0)
            return
        try:
            starting.result()
        except BaseException:
            stopper.cancel()
            logs.release_held()
            await server.stop(0)
            raise
        print(
            json.dumps(
                {
                    "listening": f"{parse_host_port(settings.listen)[0]}:{server.port}",
                    "solana_rpc": server.rpc_url if server.localnet is not None else "external",
                    "embedded_localnet": server.localnet is not None,
                    # Where the keys (and all other state) live: another folder or
                    # AGENT_STAKING_DATA_DIR means another store.
                    "data_dir": str(settings.data_dir.resolve()),
                    "store": settings.store_location,
                }
            ),
            flush=True,
        )
        for key, secret in server.bootstrapped_keys:
            # Shown once: the store keeps only a digest of the secret.
            print(json.dumps({"bootstrap_api_key": _key_json(key, secret)}), flush=True)
        logs.release_held()
        # What start-up made (modules, descriptors, the chain's caches: some 100,000
        # objects) lives as long as the process: out of the cyclic collector's full
        # passes, which would otherwise walk it all (tens of ms, in some call's latency).
        gc.freeze()
        waiter = asyncio.create_task(server.wait())
        await asyncio.wait({stopper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        log.info(
            "draining: health NOT_SERVING, calls in flight get %ss", settings.shutdown_grace_seconds
        )
        await server.stop()
        stopper.cancel()
        waiter.cancel()
    finally:
        stderr.close()


async def _run_workers(args: argparse.Namespace, settings: Settings) -> None:
    """`serve --workers N`: N server processes (fresh interpreters, never forks of a
    process running gRPC) sharing the gRPC port through SO_REUSEPORT.

    The parent starts the embedded localnet when there is no --rpc-url and bootstraps
    the keys, so every worker shares one chain and one key store; worker metrics meet
    in PROMETHEUS_MULTIPROC_DIR (a temporary directory unless set). SIGTERM/SIGINT is
    forwarded to every worker; the parent exits once they have drained."""
    from service.server import embedded_fee_wallet

    host, port = parse_host_port(settings.listen)
    if port == 0:
        raise ValueError(
            f"--workers {settings.workers} needs a concrete --listen port: "
            "port 0 cannot be shared by several processes"
        )
    logs = configure_logging(
        level=settings.log_level, levels=settings.log_levels, fmt=settings.log_format
    )
    logs.hold()
    env = dict(os.environ)
    env["AGENT_STAKING_WORKERS"] = str(settings.workers)
    env["AGENT_STAKING_BOOTSTRAP_KEYS"] = "false"  # done here, once
    own_metrics_dir: str | None = None
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):
        own_metrics_dir = tempfile.mkdtemp(prefix="agent-staking-metrics-")
        env["PROMETHEUS_MULTIPROC_DIR"] = own_metrics_dir
    localnet: LocalnetServer | None = None
    workers: list[asyncio.subprocess.Process] = []
    relays: list[asyncio.Task[None]] = []
    try:
        if settings.embedded_localnet:
            localnet = LocalnetServer(
                LocalnetConfig(
                    validators=settings.localnet_validators,
                    seed=settings.localnet_seed,
                    slot_duration=settings.localnet_slot_ms / 1000,
                    slots_per_epoch=settings.localnet_slots_per_epoch,
                )
            )
            await localnet.start(*parse_host_port(settings.localnet_listen))
            env["AGENT_STAKING_RPC_URLS"] = json.dumps([f"{localnet.url}#name=localnet"])
            if settings.fee_recipient is None and settings.service_fee_bps:
                recipient = embedded_fee_wallet(settings.localnet_seed)
                env["AGENT_STAKING_FEE_RECIPIENT"] = recipient
                await _airdrop(localnet.url, recipient, LAMPORTS_PER_SOL)
        elif args.rpc_url:
            env["AGENT_STAKING_RPC_URLS"] = json.dumps(settings.rpc_urls)
        if args.listen:
            env["AGENT_STAKING_LISTEN"] = args.listen
        if args.metrics_listen:
            env["AGENT_STAKING_METRICS_LISTEN"] = args.metrics_listen
        for flag, name in (
            (args.tls_cert, "TLS_CERT_FILE"),
            (args.tls_key, "TLS_KEY_FILE"),
            (args.tls_client_ca, "TLS_CLIENT_CA_FILE"),
        ):
            if flag is not None:
                env[f"AGENT_STAKING_{name}"] = str(flag)
        bootstrapped: list[tuple[ApiKey, str]] = []
        bootstrap = settings.bootstrap_keys
        if bootstrap if bootstrap is not None else settings.embedded_localnet:
            bootstrapped = await _bootstrap_keys(settings, logs.release_held)
        command = [sys.executable, "-m", "service", "serve", "--worker-process"]
        if args.config is not None:
            command += ["--config", str(args.config)]
        for _ in range(settings.workers):
            workers.append(
                await asyncio.create_subprocess_exec(
                    *command,
                    env=env,
                    stdout=asyncio.subprocess.PIPE,
                    # A terminal's Ctrl-C reaches the parent only; it forwards SIGTERM.
                    start_new_session=True,
                )
            )
        # A worker announces itself once its dependencies answer; until then its lines
        # (start-up attempts) go through.
        patience = (
            settings.startup_timeout_seconds + 60 if settings.startup_timeout_seconds else None
        )
        for worker in workers:
            assert worker.stdout is not None
            try:
                async with asyncio.timeout(patience):
                    while (first := await worker.stdout.readline()) and not first.startswith(
                        b'{"listening"'
                    ):
                        sys.stdout.write(first.decode(errors="replace"))
                        sys.stdout.flush()
            except TimeoutError:
                first = b""
            if not first.startswith(b'{"listening"'):
                raise OSError(f"worker {worker.pid} did not start")
        print(
            json.dumps(
                {
                    "listening": f"{host}:{port}",
                    "solana_rpc": localnet.url if localnet is not None else "external",
                    "embedded_localnet": localnet is not None,
                    "workers": [worker.pid for worker in workers],
                }
            ),
            flush=True,
        )
        for key, secret in bootstrapped:
            print(json.dumps({"bootstrap_api_key": _key_json(key, secret)}), flush=True)
        logs.release_held()
        relays = [asyncio.create_task(_relay_lines(worker)) for worker in workers]
        stopper = asyncio.create_task(wait_for_signal())
        exits: dict[asyncio.Task[Any], asyncio.subprocess.Process] = {
            asyncio.create_task(worker.wait()): worker for worker in workers
        }
        done, _ = await asyncio.wait({stopper, *exits}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        failed = [exits[task] for task in done if task in exits]
        log.info("stopping %d workers", len(workers))
        await _stop_workers(workers, settings.shutdown_grace_seconds + 15)
        await asyncio.gather(*relays, return_exceptions=True)
        if failed:
            raise OSError(f"worker {failed[0].pid} exited with {failed[0].returncode}")
        bad = [w for w in workers if w.returncode != 0]
        if bad:
            raise OSError(f"worker {bad[0].pid} exited with {bad[0].returncode}")
    finally:
        logs.release_held()
        await _stop_workers(workers, 5)
        for relay in relays:
            relay.cancel()
        if localnet is not None:
            await localnet.stop()
        if own_metrics_dir is not None:
            shutil.rmtree(own_metrics_dir, ignore_errors=True)


async def _bootstrap_keys(
    settings: Settings, on_wait: Callable[[], None]
) -> list[tuple[ApiKey, str]]:
    """Create the first keys in an empty store (waiting for the database like a
    server's start-up)."""
    startup = Startup(
        StartupPolicy(
            give_up_after=settings.startup_timeout_seconds,
            max_delay=settings.startup_retry_max_seconds,
        ),
        on_wait=on_wait,
    )
    database = Database(
        settings.store_url,
        timeout=settings.database_timeout_seconds,
        recheck=settings.database_recheck_seconds,
    )
    try:
        await startup.wait_for(
            f"the database {database.url}", database.connect, (StoreUnavailableError,)
        )
        manager = KeyManager(SqlKeyStore(database))
        try:
            return await manager.bootstrap_if_empty()
        finally:
            await manager.stop()
    finally:
        await database.close()


def _exit_with_parent() -> None:
    """A worker drains (SIGTERM) when its parent dies, however it dies (Linux)."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


async def _stop_workers(workers: list[asyncio.subprocess.Process], timeout: float) -> None:
    """SIGTERM to every live worker (they drain), SIGKILL after `timeout` seconds."""
    for worker in workers:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.gather(*(w.wait() for w in workers)), timeout)
    except TimeoutError:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
        await asyncio.gather(*(w.wait() for w in workers))


async def _relay_lines(worker: asyncio.subprocess.Process) -> None:
    """A worker's log lines onto the parent's stdout, whole lines at a time."""
    assert worker.stdout is not None
    while line := await worker.stdout.readline():
        sys.stdout.write(line.decode(errors="replace"))
        sys.stdout.flush()


async def _rpc_call(url: str, method: str, params: list[Any]) -> Any:
    """One JSON-RPC call to a Solana endpoint (the localnet's admin methods included).

    Raises:
        OSError: The endpoint cannot be reached or answered with an error.
    """
    import aiohttp

    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.post(url, json=body) as response,
        ):
            response.raise_for_status()
            answer = await response.json()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise OSError(
            f"cannot reach the Solana endpoint at {url} ({type(exc).__name__}): start "
            "`agent-staking serve` (embedded localnet) or `agent-staking localnet`, or pass "
            "--rpc-url"
        ) from None
    error = answer.get("error") if isinstance(answer, dict) else None
    if error is not None:
        if error.get("code") == -32601 and method.startswith("localnet_"):
            raise OSError(f"{url} is not an agent-staking localnet ({method} is unknown there)")
        raise OSError(f"{method} failed at {url}: {error.get('message')}")
    return answer.get("result")


async def _airdrop(url: str, recipient: str, lamports: int) -> str:
    """Fund ``recipient`` from the localnet's faucet; the signature, once confirmed."""
    signature = str(await _rpc_call(url, "requestAirdrop", [recipient, lamports]))
    for _ in range(300):
        statuses = await _rpc_call(url, "getSignatureStatuses", [[signature]])
        status = (statuses or {}).get("value", [None])[0]
        if status and status.get("confirmationStatus") in ("confirmed", "finalized"):
            return signature
        await asyncio.sleep(0.1)
    raise OSError(f"the airdrop {signature} was not confirmed within 30 s")


def _sol_to_lamports(value: str) -> int:
    from decimal import Decimal, InvalidOperation

    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount of SOL: {value!r}") from None
    lamports = amount * LAMPORTS_PER_SOL
    if amount <= 0 or lamports != lamports.to_integral_value():
        raise argparse.ArgumentTypeError(
            f"SOL must be positive with at most 9 decimals, got {value!r}"
        )
    return int(lamports)


def _epoch_count(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        count = 0
    if not 1 <= count <= 1000:
        raise argparse.ArgumentTypeError(f"N must be a whole number from 1 to 1000, got {value!r}")
    return count


async def _run_localnet_admin(args: argparse.Namespace) -> int:
    # Default: the embedded localnet `serve` starts (AGENT_STAKING_LOCALNET_LISTEN).
    url = args.rpc_url or f"http://{load_settings({}).localnet_listen}"
    if args.localnet_command == "airdrop":
        from solders.pubkey import Pubkey

        try:
            address = str(Pubkey.from_string(args.address))
        except ValueError:
            raise ValueError(f"not a Solana address: {args.address!r}") from None
        signature = await _airdrop(url, address, args.sol)
        balance = await _rpc_call(url, "getBalance", [address, {"commitment": "confirmed"}])
        print(
            json.dumps(
                {
                    "address": address,
                    "lamports": args.sol,
                    "signature": signature,
                    "balance_lamports": balance["value"],
                }
            )
        )
    else:
        result = await _rpc_call(url, "localnet_advanceEpochs", [args.epochs])
        print(json.dumps({"epoch": result["epoch"], "slot": result["slot"]}))
    return 0


def _key_json(key: ApiKey, secret: str | None = None) -> dict[str, object]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    body: dict[str, object] = {
        "key_id": key.key_id,
        "name": key.name,
        "display_name": key.display_name,
        "scopes": sorted(key.scopes),
        "state": key.state.value,
        "create_time": iso(key.create_time),
        "expire_time": iso(key.expire_time),
        "rotate_time": iso(key.rotate_time),
        "grace_expire_time": iso(key.grace_expire_time),
        "revoke_time": iso(key.revoke_time),
        "last_used_time": iso(key.last_used_time),
        "request_count": key.request_count,
    }
    if secret is not None:
        body["secret"] = secret
    return body


async def _run_keys(args: argparse.Namespace) -> int:
    settings = load_settings({}, args.config)
    # First, where the keys live: another folder (a relative data_dir) is another store.
    print(f"agent-staking: store {settings.store_location}", file=sys.stderr)
    applied = await migrate(settings.store_url)
    if FIRST_MIGRATION in applied:
        print(
            f"agent-staking: warning: {settings.store_location} did not exist and is now a new, "
            "empty store; a server started elsewhere (another folder or "
            "AGENT_STAKING_DATA_DIR) keeps its keys in its own store",
            file=sys.stderr,
        )
    if args.keys_command == "migrate":
        print(json.dumps({"migrated": True, "versions_applied": applied}))
        return 0
    manager = KeyManager(await open_store(settings.store_url))
    try:
        if args.keys_command == "create":
            expire = (
                datetime.now(UTC) + timedelta(days=args.expire_days) if args.expire_days else None
            )
            key, secret = await manager.create(
                display_name=args.name, scopes=args.scope, expire_time=expire
            )
            print(json.dumps(_key_json(key, secret)))
        elif args.keys_command == "rotate":
            grace = timedelta(hours=args.grace_hours) if args.grace_hours is not None else None
            key, secret = await manager.rotate(args.key_id, grace_period=grace)
            print(json.dumps(_key_json(key, secret)))
        elif args.keys_command == "revoke":
            print(json.dumps(_key_json(await manager.revoke(args.key_id))))
        elif args.keys_command == "list":
            state = KeyState(args.state) if args.state else None
            keys: list[dict[str, object]] = []
            token = ""
            while True:
                page, token, _ = await manager.list(page_size=500, page_token=token, state=state)
                keys.extend(_key_json(k) for k in page)
                if not token:
                    break
            print(json.dumps({"api_keys": keys}))
    except DomainError as exc:
        print(json.dumps({"error": exc.reason, "message": exc.message}), file=sys.stderr)
        return 1
    finally:
        await manager.stop()
    return 0


def _run_receipt_key(args: argparse.Namespace) -> int:
    """Print the receipt keys (creating the embedded default's file like `serve`
    would); --stage adds the next key, --rotate makes it (or a new one) active."""
    from service.receipts import KeyRing, ensure_key_file, public_view, read_key_file

    settings = load_settings({}, args.config)
    path = args.key_file or settings.receipt_key_path
    now = datetime.now(UTC)
    created = False
    if args.stage or args.rotate:
        ring = read_key_file(path) if path.exists() else None
        if ring is None:
            ring, created = KeyRing.generate(now), True
        ring = ring.stage(now) if args.stage else ring.rotate(now)
        write_key_file(path, ring)
    elif args.key_file is None and settings.receipt_key_file is None:
        ring, created = ensure_key_file(path, now=now)
    else:
        ring = read_key_file(path)
    print(
        json.dumps(
            {
                "key_file": str(path.resolve()),
                "created": created,
                "receipt_keys": public_view(ring.keys),
            }
        )
    )
    return 0


def _find_receipt(value: Any) -> tuple[dict[str, Any], str | None] | None:
    """The receipt in a saved response (JSON as grpcurl prints it, or snake_case) and
    the base64 message next to it, if any."""
    if not isinstance(value, dict):
        return None
    if "payload" in value and "signature" in value:
        return value, None
    if isinstance(value.get("receipt"), dict):
        return value["receipt"], value.get("message")
    for child in value.values():
        found = _find_receipt(child)
        if found is not None:
            return found
    return None


def _published_keys(text: str) -> dict[str, bytes]:
    """Key id -> public key from `receipt-key` output or a GetNetworkInfo response."""
    import base64

    value = json.loads(text)
    if isinstance(value, dict):
        value = value.get("receipt_keys", value.get("receiptKeys", []))
    keys: dict[str, bytes] = {}
    for key in value if isinstance(value, list) else []:
        key_id = key.get("key_id") or key.get("keyId")
        public = key.get("public_key") or key.get("publicKey")
        if isinstance(key_id, str) and isinstance(public, str):
            keys[key_id] = base64.b64decode(public)
    return keys


def _run_verify_receipt(args: argparse.Namespace) -> int:
    """Check a saved receipt: published key, Ed25519 signature, the message's hash."""
    import base64
    import hashlib

    from service.core.receipts import parse_receipt_payload, signature_valid
    from service.receipts import read_key_file

    text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text()
    found = _find_receipt(json.loads(text))
    if found is None:
        raise ValueError(f"{args.file} holds no receipt (payload, signature, key id)")
    receipt, message = found
    if args.keys is not None:
        keys = _published_keys(args.keys.read_text())
    else:
        settings = load_settings({}, args.config)
        ring = read_key_file(args.key_file or settings.receipt_key_path)
        keys = {key.key_id: key.public_key for key in ring.keys}
    key_id = str(receipt.get("key_id") or receipt.get("keyId") or "")
    payload = str(receipt.get("payload", ""))
    signature = base64.b64decode(str(receipt.get("signature", "")))
    checks: dict[str, bool | None] = {"key_published": key_id in keys}
    checks["signature"] = checks["key_published"] and signature_valid(
        payload=payload, signature=signature, public_key=keys[key_id]
    )
    body: dict[str, Any] = {"key_id": key_id}
    try:
        parsed = parse_receipt_payload(payload)
        checks["payload"] = parsed.key_id == key_id
        body["payload"] = json.loads(payload)
    except ValueError:
        checks["payload"] = False
        parsed = None
    checks["message_sha256"] = None
    if message is not None and parsed is not None:
        digest = hashlib.sha256(base64.b64decode(message)).hexdigest()
        checks["message_sha256"] = digest == parsed.message_sha256
    valid = all(check is not False for check in checks.values())
    print(json.dumps({"valid": valid, **body, "checks": checks}))
    return 0 if valid else 1


DEFAULT_API_KEY_ENV = "AGENT_STAKING_API_KEY"
FIRST_MIGRATION = 1
"""Applied when a store is created (an empty database)."""


async def _run_mcp(args: argparse.Namespace) -> int:
    from service.mcp import McpConfig, run_http, run_stdio

    api_key = os.environ.get(args.api_key_env, "").strip()
    tls_ca = args.tls_ca.read_bytes() if args.tls_ca is not None else None
    config = McpConfig(
        target=args.target, api_key=api_key, tls_ca=tls_ca, stream_window=args.stream_window
    )
    if not api_key:
        log.warning(
            "no API key in $%s: calls carry none%s",
            args.api_key_env,
            " unless the HTTP client sends its own" if args.http else "",
        )
    if args.http is None:
        # stdout is the MCP channel: nothing else may be written to it.
        await run_stdio(config)
        return 0
    host, port = args.http

    def announce(url: str) -> None:
        print(json.dumps({"mcp": url, "target": args.target}), flush=True)

    await run_http(config, host, port, announce=announce, stop=wait_for_signal())
    return 0


def _add_key_file(parser: argparse.ArgumentParser | argparse._ActionsContainer, text: str) -> None:
    parser.add_argument("--key-file", type=Path, metavar="FILE", help=text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent-staking", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC service")
    serve.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="where gRPC listens (default 127.0.0.1:50051; env AGENT_STAKING_LISTEN)",
    )
    serve.add_argument(
        "--rpc-url",
        action="append",
        metavar="URL",
        help="Solana JSON-RPC endpoint; repeat for failover endpoints (the first is the "
        "primary); without one the embedded localnet is started",
    )
    serve.add_argument(
        "--config", type=Path, help="TOML settings file (env AGENT_STAKING_CONFIG_FILE)"
    )
    serve.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="where GET /metrics (Prometheus) is served; `off` turns it off "
        "(default 127.0.0.1:9464; env AGENT_STAKING_METRICS_LISTEN)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="server processes sharing the gRPC port (SO_REUSEPORT; needs a concrete "
        "port; default 1; env AGENT_STAKING_WORKERS)",
    )
    # Internal: a worker process started by `serve --workers N`.
    serve.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help="PEM certificate chain: serve gRPC and /metrics over TLS (with --tls-key; "
        "re-read when the file changes; env AGENT_STAKING_TLS_CERT_FILE)",
    )
    serve.add_argument(
        "--tls-key",
        type=Path,
        metavar="FILE",
        help="PEM private key of --tls-cert (env AGENT_STAKING_TLS_KEY_FILE)",
    )
    serve.add_argument(
        "--tls-client-ca",
        type=Path,
        metavar="FILE",
        help="PEM CA bundle: require and verify client certificates, mutual TLS "
        "(env AGENT_STAKING_TLS_CLIENT_CA_FILE)",
    )
    serve.add_argument(
        "--localnet-listen",
        metavar="HOST:PORT",
        help="where the embedded localnet's JSON-RPC listens when there is no --rpc-url "
        "(default 127.0.0.1:8899; env AGENT_STAKING_LOCALNET_LISTEN)",
    )
    serve.add_argument("--worker-process", action="store_true", help=argparse.SUPPRESS)

    keys = commands.add_parser(
        "keys", help="manage API keys in the configured key store (no server needed)"
    )
    keys.add_argument("--config", type=Path, help="TOML settings file")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key; prints it with its secret")
    create.add_argument("--name", required=True, help="display name")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=[s.value for s in Scope],
        help="scope to grant (repeat for several)",
    )
    create.add_argument("--expire-days", type=float, help="expire the key after this many days")
    rotate = key_commands.add_parser(
        "rotate", help="issue a new secret; the old one keeps a grace period"
    )
    rotate.add_argument("key_id")
    rotate.add_argument(
        "--grace-hours", type=float, help="how long the old secret stays valid (default 24)"
    )
    revoke = key_commands.add_parser("revoke", help="stop every secret of a key now")
    revoke.add_argument("key_id")
    listing = key_commands.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--state", choices=[s.value for s in KeyState])
    key_commands.add_parser(
        "migrate", help="apply the schema migrations of the service's database (keys and all)"
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
    admin = localnet.add_subparsers(dest="localnet_command", metavar="{airdrop,advance-epochs}")
    airdrop = admin.add_parser(
        "airdrop", help="fund an address from the localnet's faucet (waits for confirmation)"
    )
    airdrop.add_argument("address", help="base58 address to fund")
    airdrop.add_argument("sol", type=_sol_to_lamports, metavar="SOL", help="amount, e.g. 10 or 0.5")
    advance = admin.add_parser(
        "advance-epochs",
        help="jump N epochs ahead (stake warms up and cools down and rewards are paid as at "
        "real epoch boundaries)",
    )
    advance.add_argument(
        "epochs", type=_epoch_count, metavar="N", help="epochs to advance (1 to 1000)"
    )
    for command in (airdrop, advance):
        command.add_argument(
            "--rpc-url",
            help="the localnet's JSON-RPC URL (default: the embedded localnet `agent-staking "
            "serve` starts, http://127.0.0.1:8899 or AGENT_STAKING_LOCALNET_LISTEN)",
        )

    receipt_key = commands.add_parser(
        "receipt-key",
        help="print the public receipt keys as JSON (--stage, --rotate: change the key file)",
    )
    receipt_key.add_argument("--config", type=Path, help="TOML settings file")
    _add_key_file(
        receipt_key,
        "the receipt key file (default: AGENT_STAKING_RECEIPT_KEY_FILE, else "
        "DATA_DIR/receipt-keys.json, created there like `serve` does)",
    )
    change = receipt_key.add_mutually_exclusive_group()
    change.add_argument(
        "--stage",
        action="store_true",
        help="add the next key: published now, signing after --rotate (several replicas: "
        "stage, let every replica load it, then rotate)",
    )
    change.add_argument(
        "--rotate",
        action="store_true",
        help="make the next key (or a new one) active; the old one is retired, still "
        "published (creates the file when it does not exist)",
    )
    verify = commands.add_parser(
        "verify-receipt",
        help="verify a receipt saved as JSON (a Build* response, its transaction, or the "
        "receipt itself); exit 0 when valid",
    )
    verify.add_argument("file", type=Path, metavar="FILE", help="the JSON file; - for stdin")
    verify.add_argument("--config", type=Path, help="TOML settings file")
    keys_from = verify.add_mutually_exclusive_group()
    _add_key_file(keys_from, "verify with this receipt key file's keys")
    keys_from.add_argument(
        "--keys",
        type=Path,
        metavar="FILE",
        help="verify with the published keys in FILE: `agent-staking receipt-key` output or "
        "a GetNetworkInfo response (default: the configured receipt key file)",
    )

    mcp = commands.add_parser(
        "mcp",
        help="run an MCP server whose tools call agent-staking's gRPC API "
        "(stdio, or streamable HTTP with --http)",
    )
    mcp.add_argument(
        "--target", required=True, metavar="HOST:PORT", help="gRPC address of agent-staking"
    )
    mcp.add_argument(
        "--api-key-env",
        default=DEFAULT_API_KEY_ENV,
        metavar="NAME",
        help=f"environment variable holding the API key (default {DEFAULT_API_KEY_ENV})",
    )
    mcp.add_argument(
        "--tls-ca",
        type=Path,
        metavar="FILE",
        help="PEM CA certificate of the service: connect with TLS (default: plaintext)",
    )
    mcp.add_argument(
        "--http",
        type=parse_listen,
        metavar="HOST:PORT",
        help="serve MCP over streamable HTTP at http://HOST:PORT/mcp instead of stdio; "
        "clients may send their own API key (Authorization: Bearer)",
    )
    mcp.add_argument(
        "--stream-window",
        type=_positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long a streaming tool (watch_transaction, watch_events) collects "
        "messages before it answers with what it has (default 30)",
    )
    return parser


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds from 0 to 3600, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # stdout carries the commands' results; `serve` moves its logs to stdout itself.
    configure_logging(level="INFO", stream=sys.stderr)
    try:
        if args.command == "localnet" and args.localnet_command:
            return asyncio.run(_run_localnet_admin(args))
        if args.command == "localnet":
            asyncio.run(_run_localnet(args))
        elif args.command == "serve":
            asyncio.run(_run_serve(args))
        elif args.command == "keys":
            return asyncio.run(_run_keys(args))
        elif args.command == "mcp":
            return asyncio.run(_run_mcp(args))
        elif args.command == "receipt-key":
            return _run_receipt_key(args)
        elif args.command == "verify-receipt":
            return _run_verify_receipt(args)
    except (ValueError, OSError, StartupError) as exc:
        print(f"agent-staking: {exc}", file=sys.stderr)
        return 1
    except DomainError as exc:  # e.g. `keys list` while the database is down
        detail = getattr(exc, "detail", "") or getattr(exc.__cause__, "detail", "")
        print(
            f"agent-staking: {exc.message} ({exc.reason}{': ' + detail if detail else ''})",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
