"""Errors of the service's database; owners of tables turn them into their own."""

from __future__ import annotations

from service.core.errors import DomainError, ErrorKind


class StoreUnavailableError(DomainError):
    """The database cannot be reached, failed, or did not answer in time.

    Raised at once, without trying, while an outage is known (see
    :class:`~service.store.Database`); ``retry_after`` says when a retry may help.
    """

    kind = ErrorKind.UNAVAILABLE
    default_reason = "STORE_UNAVAILABLE"
    default_hint = "Retry shortly."

    def __init__(self, operation: str, *, retry_after: float = 1.0, detail: str = "") -> None:
        super().__init__(f"the service's database failed during {operation}")
        self.operation = operation
        self.detail = detail
        """What the driver said (for the operator's logs; never sent to callers)."""
        # Read by service.api when it builds google.rpc.RetryInfo.
        self.retry_after = retry_after


class StoreBusyError(TimeoutError):
    """The whole timeout went by waiting for the connection other transactions of this
    process held: contention on a busy process, no sign that the database is down (the
    transaction that held it counts if it was the one that hung)."""


class StoreConflictError(Exception):
    """A write broke a uniqueness constraint; ``constraint`` names it (the table's
    owner decides what that means, e.g. a key id drawn twice)."""

    def __init__(self, constraint: str) -> None:
        super().__init__(constraint)
        self.constraint = constraint
