"""Bolt errors onto graphgate's tree (in process; the live paths are in test_bolt_bounds.py).

Memgraph's spellings come from its documentation and source: no Memgraph
server is available here.
"""

from __future__ import annotations

import pytest
from neo4j.exceptions import (
    ConnectionAcquisitionTimeoutError,
    IncompleteCommit,
    ServiceUnavailable,
    TransientError,
)

from graphgate.backends.bolt_abandon import memgraph_terminate_statement, transaction_metadata
from graphgate.backends.bolt_errors import WriteProgress, abandoned, translate
from graphgate.errors import (
    UNKNOWN_OUTCOME_HINT,
    BackendUnavailable,
    Busy,
    MemoryLimitExceeded,
    QueryTimeout,
    WriteOutcomeUnknown,
)


def test_memgraph_memory_and_timeout_messages() -> None:
    bomb = TransientError(
        "Memory limit exceeded! Attempting to allocate a chunk of 4.00MiB which would "
        "exceed the limit of 1.00GiB."
    )
    refused = translate(bomb, progress=WriteProgress("open"))
    assert isinstance(refused, MemoryLimitExceeded)
    assert "nothing was changed" in str(refused) and "LIMIT" in str(refused)
    late = translate(
        TransientError("Transaction was asked to abort because of transaction timeout."),
        timeout=2.0,
    )
    assert isinstance(late, QueryTimeout) and not isinstance(late, WriteOutcomeUnknown)
    assert "2 s" in str(late)


@pytest.mark.parametrize(
    ("phase", "unknown"), [("unsent", False), ("open", False), ("committing", True)]
)
def test_a_lost_connection_says_what_became_of_the_write(phase: str, unknown: bool) -> None:
    error = translate(
        ServiceUnavailable(
            "Failed to read from defunct connection IPv4Address(('10.1.2.3', 7687))"
        ),
        progress=WriteProgress(phase),  # type: ignore[arg-type]
    )
    assert isinstance(error, BackendUnavailable) and error.retry_after
    assert (UNKNOWN_OUTCOME_HINT in str(error)) is unknown
    assert "10.1.2.3" not in str(error)  # addresses go to the log only
    assert "not retried" in str(error)


def test_an_incomplete_commit_is_outcome_unknown_whatever_the_phase() -> None:
    error = translate(IncompleteCommit("gone"), progress=WriteProgress("open"))
    assert UNKNOWN_OUTCOME_HINT in str(error)


def test_graphgates_own_deadline() -> None:
    assert not isinstance(abandoned(5.0, None), WriteOutcomeUnknown)
    assert not isinstance(abandoned(5.0, WriteProgress("open")), WriteOutcomeUnknown)
    committing = abandoned(5.0, WriteProgress("committing"))
    assert isinstance(committing, WriteOutcomeUnknown)
    assert UNKNOWN_OUTCOME_HINT in str(committing)


def test_a_full_pool_is_busy_with_a_retry_hint() -> None:
    busy = translate(ConnectionAcquisitionTimeoutError("no connection in 2.0s"), pool_size=4)
    assert isinstance(busy, Busy) and busy.retry_after > 0
    assert "all 4 connections" in str(busy)


def test_memgraph_termination_matches_only_this_call_and_only_digit_ids() -> None:
    call = "c0ffee"
    rows = [
        {"transaction_id": "17", "metadata": transaction_metadata(call)},
        {"transaction_id": "18", "metadata": transaction_metadata("other")},
        {"transaction_id": '19" , "20', "metadata": transaction_metadata(call)},
        {"transaction_id": "21", "metadata": None},
    ]
    assert memgraph_terminate_statement(rows, call) == 'TERMINATE TRANSACTIONS "17"'
    assert memgraph_terminate_statement(rows[1:2], call) is None
