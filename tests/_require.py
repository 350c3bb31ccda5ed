"""What a test needs from the machine (a database, a tool, node packages)."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(message: str) -> NoReturn:
    """Skip locally, fail in CI (``CI=true``): CI installs and starts everything the
    suite needs, so something missing there is an error, never a silent skip."""
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
