"""Start-up with dependencies that may not answer yet: retry with backoff, one line per
attempt, a time to give up.

The server already listens while it waits (health NOT_SERVING), so orchestration
sees a live process that is not ready; callers get UNAVAILABLE with RetryInfo.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("service.startup")


class StartupError(Exception):
    """A dependency did not answer before the give-up time (one line, no traceback)."""


@dataclass(frozen=True, kw_only=True)
class StartupPolicy:
    """How long and how often start-up waits for its dependencies.

    Attributes:
        give_up_after: Seconds from the start after which start-up fails; 0: never.
        first_delay: Seconds before the second attempt; doubled after each one.
        max_delay: The longest pause between two attempts.
    """

    give_up_after: float = 120.0
    first_delay: float = 0.5
    max_delay: float = 5.0


class Startup:
    """Waits for one dependency after another, all within one give-up time."""

    def __init__(
        self,
        policy: StartupPolicy,
        *,
        on_wait: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``on_wait`` runs before the first line about a dependency that does not
        answer (the command line stops holding its logs back then)."""
        self._policy = policy
        self._on_wait = on_wait
        self._clock = clock
        self._started = clock()

    async def wait_for(
        self,
        name: str,
        attempt: Callable[[], Awaitable[object]],
        failures: tuple[type[BaseException], ...],
    ) -> None:
        """Call ``attempt`` until it returns; ``failures`` are the exceptions that
        mean "not answering yet" (anything else propagates at once).

        Raises:
            StartupError: The give-up time passed.
        """
        policy = self._policy
        delay = policy.first_delay
        number = 0
        while True:
            number += 1
            try:
                await attempt()
            except failures as exc:
                reason = _reason(exc)
            else:
                if number > 1:
                    log.info("start-up: %s answers (attempt %d)", name, number)
                return
            elapsed = self._clock() - self._started
            if policy.give_up_after and elapsed >= policy.give_up_after:
                raise StartupError(
                    f"gave up after {elapsed:.0f} s ({number} attempts): {name} does not "
                    f"answer ({reason})"
                )
            pause = delay
            if policy.give_up_after:
                pause = min(pause, max(0.0, policy.give_up_after - elapsed))
            if number == 1 and self._on_wait is not None:
                self._on_wait()
            log.warning(
                "start-up: %s does not answer (%s); attempt %d, next in %.1f s%s",
                name,
                reason,
                number,
                pause,
                f", giving up in {policy.give_up_after - elapsed:.0f} s"
                if policy.give_up_after
                else "",
            )
            await asyncio.sleep(pause)
            delay = min(delay * 2, policy.max_delay)


def _reason(exc: BaseException) -> str:
    message = getattr(exc, "detail", None) or getattr(exc, "message", None) or str(exc)
    if isinstance(exc, TimeoutError) and not message:
        return "no answer in time"
    return message.strip() or type(exc).__name__
