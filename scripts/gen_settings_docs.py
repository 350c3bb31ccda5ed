"""Rewrite the configuration table of docs/operators.md from `service.config.Settings`.

Usage: python scripts/gen_settings_docs.py [--check]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from service.config import SERVE_FLAGS, settings_reference

DOC = Path(__file__).resolve().parents[1] / "docs" / "operators.md"
BLOCK = re.compile(r"(<!-- settings:begin -->\n).*?(<!-- settings:end -->)", re.S)


def main() -> int:
    text = DOC.read_text()
    if not BLOCK.search(text):
        print(f"{DOC}: no settings markers", file=sys.stderr)
        return 2
    fresh = BLOCK.sub(lambda m: m.group(1) + settings_reference(SERVE_FLAGS) + m.group(2), text)
    if "--check" in sys.argv[1:]:
        if fresh != text:
            print(f"{DOC} is stale: run python scripts/gen_settings_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
