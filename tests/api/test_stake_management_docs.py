"""docs/stake-management.md cannot drift from the code: each grpcurl example's body
parses (with protobuf's JSON mapping, as grpcurl does) into the request of the method
it calls, every stake management RPC has an example, and the error tables list every
reason the new calls raise, with the status the code gives it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from agentstaking.v1 import staking_pb2
from google.protobuf import json_format, message_factory

from service import chain, core
from service.core import plans
from service.core.errors import DomainError
from service.core.policy import PolicyViolationError

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "stake-management.md").read_text()
SERVICE = staking_pb2.DESCRIPTOR.services_by_name["StakingService"]
NEW_RPCS = {
    "BuildSplitTransaction",
    "BuildMoveStakeTransaction",
    "BuildAuthorizeTransaction",
    "BuildSetLockupTransaction",
    "BuildRedelegateTransaction",
}
# Where the new calls raise their reasons.
SOURCES = [
    ROOT / "service" / "core" / "plans" / f"_{name}.py"
    for name in ("split", "move", "authorize", "lockup", "redelegate")
] + [ROOT / "service" / "chain" / "_stake_management.py"]

EXAMPLE = re.compile(
    r"grpcurl -plaintext -H \"authorization: Bearer \$KEY\" -d '(\{.*?\})' "
    r"(\S+) agentstaking\.v1\.StakingService/(\w+)",
    re.DOTALL,
)
"""A grpcurl example of the guide: (request body, address, method)."""


def _documented_reasons() -> dict[str, str]:
    """Reason -> its row's status column, from the tables under ## Errors."""
    errors = DOC[DOC.index("## Errors") :]
    rows: dict[str, str] = {}
    for line in errors.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        for reason in re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0]):
            rows[reason] = cells[1]
    return rows


def test_every_example_body_is_a_valid_request_of_its_method() -> None:
    examples = EXAMPLE.findall(DOC)
    assert {method for _, _, method in examples} >= NEW_RPCS
    for body, _, method in examples:
        descriptor = SERVICE.methods_by_name[method]
        request = message_factory.GetMessageClass(descriptor.input_type)()
        json_format.Parse(body, request)  # raises on unknown fields or bad values
        assert request.ListFields(), method


def test_every_new_rpc_has_a_documented_method() -> None:
    for name in NEW_RPCS:
        assert f"`{name}`" in DOC


def _errors() -> list[type[DomainError]]:
    found = {
        obj
        for module in (core, plans, chain)
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, DomainError)
    }
    return sorted(found | {PolicyViolationError}, key=lambda cls: cls.__name__)


def _raised_reasons() -> set[str]:
    """Reasons written in the new modules, and those of the error classes they use."""
    found: set[str] = set()
    for source in SOURCES:
        text = source.read_text()
        found |= set(re.findall(r'(?:default_reason = |reason=)"([A-Z][A-Z0-9_]+)"', text))
        used = set(re.findall(r"\b([A-Z]\w+Error)\(", text))
        found |= {cls.default_reason for cls in _errors() if cls.__name__ in used}
    return found


def test_the_error_tables_list_every_reason_the_new_calls_raise() -> None:
    documented = _documented_reasons()
    # StakeAccountStateError is raised here only with reasons of its own.
    raised = (_raised_reasons() - {"STAKE_ACCOUNT_STATE"}) | {"POLICY_WITHDRAWER_NOT_ALLOWED"}
    assert raised <= set(documented), sorted(raised - set(documented))


def _name(cls: type[DomainError]) -> str:
    return cls.__name__


@pytest.mark.parametrize("error", _errors(), ids=_name)
def test_documented_statuses_match_the_code(error: type[DomainError]) -> None:
    documented = _documented_reasons()
    if error.default_reason not in documented:
        return
    assert error.kind.value in documented[error.default_reason], error.default_reason


def test_every_documented_reason_exists_in_the_code() -> None:
    code = "\n".join(p.read_text() for p in (ROOT / "service").rglob("*.py"))
    for reason in _documented_reasons():
        assert f'"{reason}"' in code, reason
