"""Bolt driver and server errors onto graphgate's tree, saying what a client may do next.

A client acts differently on each outcome of a write, so they are told apart:

* **not sent**: the connection failed before the statement left graphgate
  (`BackendUnavailable`; nothing ran, the call may be sent again);
* **rolled back**: the server's transaction timeout, its memory limit, or a
  connection lost before ``COMMIT`` was sent (an open transaction dies with
  its connection): `QueryTimeout`, `MemoryLimitExceeded` or
  `BackendUnavailable`, each saying nothing was committed;
* **unknown**: the connection broke, or graphgate stopped waiting, after
  ``COMMIT`` (or an auto-commit statement) was sent: `WriteOutcomeUnknown`
  or `BackendUnavailable` with `UNKNOWN_OUTCOME_HINT`; so is any failure of a
  write that commits in batches (``CALL {} IN TRANSACTIONS``), whose earlier
  batches stay committed.

Server addresses and physical database names go to the log, never into the
error a client sees (they would leak through tool errors and ``/readyz``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final, Literal

from graphgate.errors import (
    UNKNOWN_OUTCOME_HINT,
    BackendUnavailable,
    Busy,
    GraphgateError,
    MemoryLimitExceeded,
    QueryError,
    QueryRefused,
    QueryTimeout,
    ReadOnlyViolation,
    WriteOutcomeUnknown,
)

__all__ = ["RETRY_AFTER", "WriteProgress", "abandoned", "translate"]

logger = logging.getLogger(__name__)

RETRY_AFTER: Final = 1.0
"""Seconds a client is told to wait after a connection failure or a full pool."""

_TIMEOUT_CODES: Final = (
    "Neo.ClientError.Transaction.TransactionTimedOut",
    "Neo.ClientError.Transaction.TransactionTimedOutClientConfiguration",
)
# Neo4j 5: MemoryPoolOutOfMemoryError for db.memory.transaction.max and
# db.memory.transaction.total.max (the message names which); the others are
# the 4.x and JVM-level spellings of the same refusal.
_MEMORY_CODES: Final = frozenset(
    {
        "Neo.TransientError.General.MemoryPoolOutOfMemoryError",
        "Neo.TransientError.General.TransactionMemoryLimit",
        "Neo.TransientError.General.OutOfMemoryError",
    }
)
_MEMORY_ADVICE: Final = "return fewer or smaller values, add LIMIT, or aggregate in smaller steps"

Phase = Literal["unsent", "open", "committing"]


@dataclass(slots=True)
class WriteProgress:
    """How far one write got: what its failure means depends on it.

    ``unsent``: the write statement has not left graphgate. ``open``: it was
    sent in an explicit transaction that is not committed (the server rolls
    it back if the connection or graphgate goes away). ``committing``:
    ``COMMIT`` (or an auto-commit statement) was sent, so it may have
    committed whatever graphgate hears next.
    """

    phase: Phase = "unsent"
    batched: bool = False
    """It commits batch by batch (``CALL {} IN TRANSACTIONS``): a failure keeps earlier batches."""


def abandoned(seconds: float, progress: WriteProgress | None) -> QueryTimeout:
    """graphgate's own deadline passed: the server did not answer in time."""
    waited = f"no answer from the database server within {seconds:g} s"
    if progress is None:
        return QueryTimeout(f"{waited}; graphgate stopped waiting and asked the server to stop it")
    if progress.phase == "committing":
        return WriteOutcomeUnknown(f"{waited} while the write was committing")
    return QueryTimeout(
        f"{waited}; graphgate stopped waiting before the write was committed, and the server "
        "rolls it back: nothing was changed"
    )


def translate(
    exc: BaseException,
    *,
    progress: WriteProgress | None = None,
    timeout: float | None = None,
    pool_size: int | None = None,
) -> GraphgateError:
    """The graphgate error for ``exc``; ``progress`` is given for writes only."""
    from neo4j.exceptions import (
        AuthError,
        ConnectionAcquisitionTimeoutError,
        DriverError,
        IncompleteCommit,
        Neo4jError,
        ServiceUnavailable,
        SessionExpired,
    )

    if isinstance(exc, GraphgateError):
        return exc
    if isinstance(exc, ConnectionAcquisitionTimeoutError):
        size = f"all {pool_size}" if pool_size else "all"
        return Busy(
            f"{size} connections to the database server are in use by other calls.",
            retry_after=RETRY_AFTER,
        )
    if isinstance(exc, AuthError):
        logger.warning("the database server refused graphgate's credentials: %s", exc.message)
        return BackendUnavailable("the database server refused graphgate's credentials")
    if isinstance(exc, ServiceUnavailable | SessionExpired | OSError):
        logger.warning("database server connection failed: %s", exc)
        return _connection_lost(progress, committing=isinstance(exc, IncompleteCommit))
    if isinstance(exc, Neo4jError):
        return _server_error(exc, progress, timeout)
    if isinstance(exc, DriverError):
        return QueryError(f"{type(exc).__name__}: {exc}")
    return QueryError(f"{type(exc).__name__}: {exc}")


def _connection_lost(progress: WriteProgress | None, *, committing: bool) -> BackendUnavailable:
    if progress is None:
        return BackendUnavailable("cannot reach the database server", retry_after=RETRY_AFTER)
    if committing or progress.phase == "committing":
        return BackendUnavailable(
            "the connection to the database server broke while the write was committing "
            f"(it was not retried); {UNKNOWN_OUTCOME_HINT}",
            retry_after=RETRY_AFTER,
        )
    if progress.phase == "open":
        return BackendUnavailable(
            "the connection to the database server broke before the write was committed, "
            "so the server rolled it back: nothing was changed (the write was not retried)",
            retry_after=RETRY_AFTER,
        )
    return BackendUnavailable(
        "cannot reach the database server: the write was not sent (and not retried)",
        retry_after=RETRY_AFTER,
    )


def _server_error(
    exc: BaseException, progress: WriteProgress | None, timeout: float | None
) -> GraphgateError:
    from neo4j.exceptions import Neo4jError

    assert isinstance(exc, Neo4jError)
    code = exc.code or ""
    # An error the driver could not hydrate from a server reply (no code) keeps its words in str().
    message = str(exc) if not exc.code or code.endswith(".UnknownError") else exc.message
    lowered = message.lower()
    if progress is None:
        unchanged = ""
    elif progress.batched:
        unchanged = f"; batches that ran before this stay committed, so {UNKNOWN_OUTCOME_HINT}"
    else:
        unchanged = "; nothing was changed"
    if code == "Neo.ClientError.Database.DatabaseNotFound" or "unknown database" in lowered:
        logger.warning("database missing on the server: %s", message)
        return QueryError(
            "this tenant's database does not exist on the server; ask the operator to create it"
        )
    if code in _TIMEOUT_CODES or "because of transaction timeout" in lowered:
        limit = f"the {timeout:g} s limit" if timeout is not None else "its time limit"
        if progress is None:
            return QueryTimeout(f"the query ran past {limit} and the server stopped it")
        if progress.batched:
            return WriteOutcomeUnknown(
                f"the batched write ran past {limit} and the server stopped it; "
                "batches that ran before that stay committed"
            )
        return QueryTimeout(f"the write ran past {limit}; the server rolled it back{unchanged}")
    if code in _MEMORY_CODES or "memory limit exceeded" in lowered:
        if "total" in lowered:  # db.memory.transaction.total.max: all queries together
            return MemoryLimitExceeded(
                "the database server's memory for running queries is used up by this and "
                f"other queries ({message.strip()}){unchanged}; retry in a moment, or "
                f"{_MEMORY_ADVICE}"
            )
        return MemoryLimitExceeded(
            f"the query needed more memory than the database server allows one query "
            f"({message.strip()}){unchanged}; {_MEMORY_ADVICE}"
        )
    if code == "Neo.ClientError.Statement.AccessMode":
        return ReadOnlyViolation(message)
    if "Database switching is prohibited" in message:
        return QueryRefused(message)
    return QueryError(message + (unchanged if progress is not None and progress.batched else ""))
