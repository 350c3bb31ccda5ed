"""Reference tables that the code can check: the errors catalogue and the settings."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import service
from service.config import SERVE_FLAGS, Settings, settings_reference
from service.core.errors import DomainError

ROOT = Path(__file__).resolve().parents[1]
_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \| ([^|]+) \|")


def _constants(trees: list[ast.Module]) -> dict[str, str]:
    found: dict[str, str] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                value = node.value
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    for target in targets:
                        if isinstance(target, ast.Name) and target.id.isupper():
                            found[target.id] = value.value
    return found


def reasons_in_code() -> set[str]:
    """Every ErrorInfo reason written in service/: ``default_reason = ...`` of the error
    classes and ``reason=...`` of the calls that raise them."""
    trees = [ast.parse(path.read_text()) for path in (ROOT / "service").rglob("*.py")]
    constants = _constants(trees)

    def literal(node: ast.expr | None) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return constants.get(node.id)
        return None

    found: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign)
                else []
            )
            if any(isinstance(t, ast.Name) and t.id == "default_reason" for t in targets):
                assert isinstance(node, ast.Assign | ast.AnnAssign)
                value = literal(node.value)
            elif isinstance(node, ast.keyword) and node.arg == "reason":
                value = literal(node.value)
            else:
                continue
            if value is not None and re.fullmatch(r"[A-Z][A-Z0-9_]*", value):
                found.add(value)
    return found


def catalogue() -> dict[str, list[str]]:
    """Reason -> the statuses its rows in docs/errors.md give (one row each, ideally)."""
    rows: dict[str, list[str]] = {}
    for line in (ROOT / "docs" / "errors.md").read_text().splitlines():
        match = _ROW.match(line)
        if match:
            rows.setdefault(match.group(1), []).append(match.group(2).strip())
    return rows


def _error_classes() -> list[type[DomainError]]:
    for module in pkgutil.walk_packages(service.__path__, "service."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    found: list[type[DomainError]] = []
    pending: list[type[DomainError]] = [DomainError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_every_reason_the_service_sends_is_catalogued_once() -> None:
    documented = catalogue()
    in_code = reasons_in_code()
    assert in_code - documented.keys() == set(), "reasons missing from docs/errors.md"
    assert documented.keys() - in_code == set(), "docs/errors.md lists reasons no code sends"
    twice = {reason for reason, rows in documented.items() if len(rows) > 1}
    assert twice == set(), "listed more than once"


def test_catalogued_statuses_match_the_error_classes() -> None:
    documented = catalogue()
    for cls in _error_classes():
        reason = cls.__dict__.get("default_reason")
        if reason is None or reason not in documented:
            continue
        status = documented[reason][0]
        assert status.startswith(f"`{cls.kind.value}`"), (reason, status, cls)


def test_the_configuration_table_is_the_settings() -> None:
    """docs/operators.md holds the table generated from Settings: every setting, its
    default and its docstring (`python scripts/gen_settings_docs.py` rewrites it)."""
    for name, field in Settings.model_fields.items():
        assert field.description, f"setting {name} has no docstring"
    text = (ROOT / "docs" / "operators.md").read_text()
    block = re.search(r"<!-- settings:begin -->\n(.*?)<!-- settings:end -->", text, re.S)
    assert block is not None
    assert block.group(1) == settings_reference(SERVE_FLAGS), (
        "docs/operators.md is stale: run python scripts/gen_settings_docs.py"
    )


def test_the_agents_guide_names_every_proto_and_well_known_import() -> None:
    """Copying the files the guide names must compile: every file of the package, and
    every well-known type they import."""
    guide = (ROOT / "docs" / "agents.md").read_text()
    protos = sorted((ROOT / "protos" / "agentstaking" / "v1").glob("*.proto"))
    for proto in protos:
        assert f"`{proto.stem}`" in guide or f"`{proto.name}`" in guide, proto.name
    imported = {
        name
        for proto in protos
        for name in re.findall(r'^import "google/protobuf/(\w+)\.proto";', proto.read_text(), re.M)
    }
    listed = re.search(r"google/protobuf/\{([\w,]+)\}\.proto", guide)
    assert listed is not None
    assert imported <= set(listed[1].split(","))
