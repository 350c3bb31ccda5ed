"""WatchEvents: every replica follows the event table and serves its streams from it.

One poller per replica reads the events committed since the last read (every
``poll_interval``, and at once when this replica records one) into a bounded buffer
of the most recent events. A stream keeps its own cursor (the last event number it
has passed): it replays from the database what lies before the buffer (a resumed
stream, or one that fell behind), then follows the buffer. Events commit in
sequence order (see :mod:`service.events._store`), so a cursor never skips one that
commits later: resuming with the last event id received misses nothing retained.

The wallets of this replica's streams are recorded in the database (renewed under a
lease) so that the producers, on whichever replica leads, watch them too.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncGenerator, Callable
from typing import Final

from service.core.errors import ShuttingDownError
from service.events._errors import EventHistoryExpiredError, InvalidEventIdError
from service.events._model import Audience, Event, event_id
from service.events._store import EventStore
from service.events._tasks import cancel
from service.store import StoreUnavailableError

log = logging.getLogger(__name__)

READ_BATCH: Final = 500


def _stopping(cursor: int) -> ShuttingDownError:
    resume = event_id(cursor)
    return ShuttingDownError(
        metadata={"since_event_id": resume},
        hint=f"Watch again with since_event_id {resume}: no event is missed.",
    )


class EventFeed:
    """This replica's view of the event table, for its streams."""

    def __init__(
        self,
        store: EventStore,
        *,
        holder: str,
        poll_interval: float = 0.5,
        buffer_size: int = 10_000,
        watch_lease: float = 30.0,
        epoch: Callable[[], int | None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Args:
        holder: This replica's name on the stream wallets it records.
        poll_interval: Seconds between reads of new events.
        buffer_size: Recent events kept in memory for the streams.
        watch_lease: Seconds a recorded stream wallet stays watched unless renewed.
        epoch: The current epoch, if known (recorded with a new wallet).
        """
        self._store = store
        self.holder = holder
        self._poll_interval = poll_interval
        self._buffer: deque[Event] = deque()
        self._buffer_size = buffer_size
        self._base = 0
        """The buffer holds every event numbered in (base, head]."""
        self.head = 0
        self._changed = asyncio.Event()
        self._wake = asyncio.Event()
        self._watch_lease = watch_lease
        self._epoch = epoch
        self._clock = clock
        self._wallets: Counter[str] = Counter()
        self._registered: frozenset[str] = frozenset()
        self._registering = asyncio.Lock()
        self._streams = 0
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._ending = False

    @property
    def streams(self) -> int:
        """Open streams on this replica."""
        return self._streams

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-feed")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    def wake(self) -> None:
        """Read new events now (one was just recorded here)."""
        self._wake.set()

    def end_streams(self) -> None:
        """End every stream with SERVER_SHUTTING_DOWN, naming where to resume (the
        server is about to stop); new ones are refused alike."""
        self._ending = True
        self._notify()

    # --- streams --------------------------------------------------------------------------

    async def follow(
        self,
        audience: Audience,
        *,
        since: int | None,
        watch: frozenset[str],
        heartbeat: float | None = None,
    ) -> AsyncGenerator[Event | None, None]:
        """The events ``audience`` receives after event number ``since`` (None: from
        now), for as long as the caller iterates; ``watch``: wallets the producers
        must follow while it does. With ``heartbeat``, None is yielded first, once the
        stream follows (every event recorded from then on reaches it), then after that
        many seconds without an event (the caller's turn to check something).

        Raises:
            InvalidEventIdError: ``since`` is beyond the last event.
            EventHistoryExpiredError: ``since`` is older than the retained history.
        """
        head, purged = await self._store.head()
        if since is not None:
            if since > head:
                raise InvalidEventIdError(
                    f"since_event_id {event_id(since)} is not an event of this service",
                    field="since_event_id",
                )
            if since < purged:
                raise EventHistoryExpiredError(
                    f"events after {event_id(since)} left the retained history",
                    metadata={"oldest_event_id": event_id(purged + 1)},
                )
        cursor = head if since is None else since
        if self._ending:
            raise _stopping(cursor)
        self._streams += 1
        self._wallets.update(watch)
        try:
            if watch - self._registered:
                await self._register()
            self._wake.set()
            beat = time.monotonic()
            if heartbeat is not None:
                yield None
            while True:
                changed = self._changed
                batch, cursor = await self._next(audience, cursor)
                for event in batch:
                    if audience.receives(event):
                        beat = time.monotonic()
                        yield event
                if heartbeat is not None and time.monotonic() - beat >= heartbeat:
                    beat = time.monotonic()
                    yield None
                if self._ending:
                    raise _stopping(cursor)
                if not batch and cursor >= self.head:
                    left = None if heartbeat is None else beat + heartbeat - time.monotonic()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(left):
                            await changed.wait()
        finally:
            self._streams -= 1
            self._wallets.subtract(watch)
            self._wallets += Counter()  # drop the zero counts
            if not self._streams:
                self._wake.set()  # the poller tidies up

    async def _next(self, audience: Audience, cursor: int) -> tuple[list[Event], int]:
        """The next events after ``cursor`` (from the buffer when it has them) and the
        cursor after them."""
        if cursor >= self._base:
            start = bisect.bisect_right(self._buffer, cursor, key=lambda e: e.seq)
            batch = list(itertools.islice(self._buffer, start, start + READ_BATCH))
            if batch:
                return batch, batch[-1].seq
            return [], max(cursor, self.head)
        # Before the buffer: from the database, up to where the buffer starts (as it
        # was asked: the poller may move it meanwhile).
        upto = self._base
        found = await self._store.read(after=cursor, upto=upto, audience=audience, limit=READ_BATCH)
        if len(found) < READ_BATCH:
            return found, upto
        return found, found[-1].seq

    async def _register(self) -> None:
        async with self._registering:
            wallets = sorted(w for w, n in self._wallets.items() if n > 0)
            await self._store.watch(
                self.holder,
                wallets,
                until=self._clock() + self._watch_lease,
                epoch=self._epoch(),
            )
            self._registered = frozenset(wallets)

    # --- the poller -------------------------------------------------------------------------

    async def _run(self) -> None:
        renew_every = self._watch_lease / 3
        renewed = float("-inf")
        while True:
            try:
                if self._streams:
                    if not self._started:
                        self.head, _ = await self._store.head()
                        self._base = self.head
                        self._started = True
                        self._notify()  # streams opened before this read it again
                    await self._poll()
                    if self._clock() - renewed >= renew_every:
                        await self._register()
                        renewed = self._clock()
                elif self._started or self._registered:
                    # The last stream ended: forget the buffer (started afresh with the
                    # next stream) and the wallets recorded for the producers.
                    self._buffer.clear()
                    self._base = self.head  # an empty buffer holds (head, head]
                    self._started = False
                    if self._registered:
                        await self._register()
            except StoreUnavailableError as exc:
                log.debug("event feed: database unavailable: %s", exc.message)
            except Exception:
                log.exception("event feed: unexpected error")
            # Idle (no stream): nothing to read until a stream opens (it wakes this).
            # NOTE: asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the
            # cancellation that stop() sends when the wait ends at the same moment.
            timeout = self._poll_interval if self._streams or self._registered else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()

    async def _poll(self) -> None:
        head, _ = await self._store.head()
        if head <= self.head:
            return
        while head > self.head:
            events = await self._store.read(
                after=self.head, upto=head, audience=None, limit=READ_BATCH
            )
            self._buffer.extend(events)
            self.head = head if len(events) < READ_BATCH else events[-1].seq
            while len(self._buffer) > self._buffer_size:
                self._base = self._buffer.popleft().seq
        self._notify()

    def _notify(self) -> None:
        """Wake the streams (each waits on the event of its time)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
