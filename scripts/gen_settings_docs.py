"""Rewrite what is generated from `service.config.Settings`: the configuration table of
docs/operators.md, and the setting names the Helm chart's `config` accepts (its
values.schema.json), so that a misspelt name fails `helm install` instead of being
passed on as a variable the service ignores.

Usage: python scripts/gen_settings_docs.py [--check]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from service.config import SERVE_FLAGS, Settings, settings_reference

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "operators.md"
SCHEMA = ROOT / "helm" / "agent-staking" / "values.schema.json"
BLOCK = re.compile(r"(<!-- settings:begin -->\n).*?(<!-- settings:end -->)", re.S)


def fresh_doc(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + settings_reference(SERVE_FLAGS) + m.group(2), text)


def fresh_schema(text: str) -> str:
    schema = json.loads(text)
    schema["properties"]["config"]["propertyNames"] = {"enum": sorted(Settings.model_fields)}
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    if not BLOCK.search(DOC.read_text()):
        print(f"{DOC}: no settings markers", file=sys.stderr)
        return 2
    stale = []
    for path, fresh in ((DOC, fresh_doc), (SCHEMA, fresh_schema)):
        text = path.read_text()
        if fresh(text) == text:
            continue
        if "--check" in sys.argv[1:]:
            stale.append(path)
        else:
            path.write_text(fresh(text))
    for path in stale:
        print(f"{path} is stale: run python scripts/gen_settings_docs.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
