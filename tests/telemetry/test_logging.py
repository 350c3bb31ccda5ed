"""Logs, captured and parsed: JSON lines, correlated with the trace, never a secret."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from agentstaking.v1 import keys_pb2, keys_pb2_grpc, staking_pb2, staking_pb2_grpc
from google.protobuf import duration_pb2

from service.localnet import LocalnetServer
from service.telemetry import JsonFormatter, LogHandler, configure_logging, redact
from tests._grpc_auth import keyed_channel

from .conftest import STAKING, Observed, parse_scrape, settled


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def _key_lifecycle(address: str, admin_secret: str) -> tuple[list[str], list[str]]:
    """Create a key, use it, rotate it, use both secrets, then a wrong one; returns the
    secrets and the request ids of the calls made with them."""
    request_ids = []
    async with keyed_channel(address, admin_secret) as admin:
        keys = keys_pb2_grpc.KeyServiceStub(admin)
        created = await keys.CreateApiKey(
            keys_pb2.CreateApiKeyRequest(display_name="logged agent", scopes=["staking"])
        )
        rotated = await keys.RotateApiKey(
            keys_pb2.RotateApiKeyRequest(
                name=created.api_key.name, grace_period=duration_pb2.Duration(seconds=60)
            )
        )
    secrets = [created.secret, rotated.secret]
    for secret in [*secrets, secrets[0][:-3] + "AAA"]:
        async with keyed_channel(address, secret) as channel:
            call = staking_pb2_grpc.StakingServiceStub(channel).GetNetworkInfo(
                staking_pb2.GetNetworkInfoRequest()
            )
            try:
                await call
            except grpc.aio.AioRpcError as exc:
                assert exc.code() is grpc.StatusCode.UNAUTHENTICATED
                request_ids.append(dict(exc.trailing_metadata() or ())["x-request-id"])
            else:
                request_ids.append(dict(await call.trailing_metadata() or ())["x-request-id"])
    return secrets, request_ids


async def test_access_log_lines_match_the_spans_and_hold_no_secret(
    observed: Observed, captured_logs: io.StringIO
) -> None:
    secrets, request_ids = await _key_lifecycle(observed.address, observed.admin_secret)

    def logged() -> tuple[str, list[dict[str, Any]], dict[str, dict[str, Any]]]:
        text = captured_logs.getvalue()
        lines = _lines(text)  # every line is one JSON object
        access = {
            line["request_id"]: line
            for line in lines
            if line["logger"] == "service.access" and line["grpc_service"] == STAKING
        }
        assert set(request_ids) <= set(access)
        return text, lines, access

    text, lines, access = await settled(logged)
    for secret in [*secrets, observed.admin_secret, observed.staking_secret]:
        assert secret not in text
        assert secret.split("_", 2)[2] not in text
    spans = {f"{s.context.trace_id:032x}": s for s in observed.finished_spans()}
    key_id = secrets[0].split("_")[1]
    for request_id, code in zip(request_ids, ["OK", "OK", "UNAUTHENTICATED"], strict=True):
        line = access[request_id]
        assert line["trace_id"] == request_id
        span = spans[request_id]
        assert line["span_id"] == f"{span.context.span_id:016x}"
        assert line["grpc_method"] == "GetNetworkInfo"
        assert line["grpc_code"] == code
        assert line["duration_ms"] >= 0
        assert line["level"] == "INFO"
        assert line["message"].startswith(f"{STAKING}/GetNetworkInfo {code}")
        assert line["time"].endswith("+00:00")
        if code == "OK":
            assert line["key_id"] == key_id
        else:
            assert line["error_reason"] == "API_KEY_UNKNOWN"
    # The key service logs the lifecycle by key id, inside the call's trace.
    rotated = [line for line in lines if line["message"] == f"API key {key_id} rotated"]
    assert rotated and rotated[0]["grpc_method"] == "RotateApiKey"
    assert rotated[0]["trace_id"] == rotated[0]["request_id"]


def test_secrets_are_scrubbed_from_every_field() -> None:
    secret = "ask_0123456789abcdef_" + "A" * 43
    stream = io.StringIO()
    handler = LogHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.telemetry.scrub")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("got %s", secret, extra={"header": f"Bearer {secret}"})
        try:
            raise ValueError(f"authorization: bearer {secret}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    text = stream.getvalue()
    assert "A" * 20 not in text
    first, second = _lines(text)
    assert first["message"] == "got ask_0123456789abcdef_<redacted>"
    assert first["header"] == "Bearer <redacted>"
    assert "ValueError: authorization: bearer <redacted>" in second["exception"]
    assert redact("nothing to hide") == "nothing to hide"


def test_times_are_utc_milliseconds_as_datetime_writes_them() -> None:
    formatter = JsonFormatter()
    # Several lines a second (the text of a second is reused), its last microsecond
    # (rounded up into the next one), the next second, and back.
    base = 1_800_000_000
    times = [
        base + 0.25,
        base + 0.2504,
        base + 0.9999996,
        base + 1.001,
        base + 0.5,
        base + 86_400.0,
    ]
    for created in times:
        record = logging.LogRecord("tests.time", logging.INFO, __file__, 0, "tick", None, None)
        record.created = created
        expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
        assert json.loads(formatter.format(record))["time"] == expected
    assert expected == "2027-01-16T08:00:00.000+00:00"


def test_levels_are_configurable() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging(level="WARNING", levels={"tests.chatty": "DEBUG"}, stream=stream)
        logging.getLogger("tests.quiet").info("hidden")
        logging.getLogger("tests.chatty").debug("shown")
        logging.getLogger("tests.quiet").error("also shown")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        logging.getLogger("tests.chatty").setLevel(logging.NOTSET)
    assert [line["message"] for line in _lines(stream.getvalue())] == ["shown", "also shown"]


@pytest.mark.timeout(90)
async def test_serve_writes_json_logs_on_stdout_and_no_secret(
    localnet: LocalnetServer, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "AGENT_STAKING_SERVICE_FEE_BPS": "0",
        "AGENT_STAKING_DATA_DIR": str(tmp_path),
        "AGENT_STAKING_DATABASE_URL": f"sqlite:///{tmp_path / 'keys.db'}",
        "AGENT_STAKING_BOOTSTRAP_KEYS": "true",
        "AGENT_STAKING_DEFAULT_VOTE_ACCOUNT": str(localnet.chain.validators[0].vote_account),
        "AGENT_STAKING_LOG_LEVEL": "DEBUG",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--rpc-url",
        localnet.url,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        # The announcement stays the first line; the start-up logs follow it.
        announced = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        address = announced["listening"]
        bootstrap = [
            json.loads(await process.stdout.readline())["bootstrap_api_key"] for _ in range(2)
        ]
        admin = next(key for key in bootstrap if "admin" in key["scopes"])
        secrets, request_ids = await _key_lifecycle(address, admin["secret"])
        metrics_port = None
        seen: list[bytes] = []
        while metrics_port is None:
            seen.append(await asyncio.wait_for(process.stdout.readline(), 10))
            line = json.loads(seen[-1])
            if line["message"].startswith("metrics on http://"):
                metrics_port = int(line["message"].rsplit(":", 1)[1].split("/")[0])
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response,
        ):
            scrape = parse_scrape(await response.text())
        labels = {"grpc_type": "unary", "grpc_service": STAKING, "grpc_method": "GetNetworkInfo"}
        assert scrape.value("grpc_server_handled_total", **labels, grpc_code="OK") == 2
        process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()
    finally:
        if process.returncode is None:
            process.kill()
    logged = b"".join(seen).decode() + out.decode()
    lines = _lines(logged)
    access = [line for line in lines if line["logger"] == "service.access"]
    assert access
    # No exporter configured: nothing recorded, yet every call has its trace id, the
    # one its client was given.
    for line in access:
        assert line["trace_id"] == line["request_id"] and len(line["span_id"]) == 16
    assert set(request_ids) <= {line["request_id"] for line in access}
    assert "agent-staking stopped" in [line["message"] for line in lines]
    everything = logged + err.decode()
    for secret in secrets:
        assert secret not in everything
        assert secret.split("_", 2)[2] not in everything
    # The bootstrap secrets were shown once, in the announcement, and never logged.
    for key in bootstrap:
        assert key["secret"].split("_", 2)[2] not in everything
