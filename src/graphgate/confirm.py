"""Asking the human before a write runs: MCP elicitation, in both protocol eras.

``confirm_writes`` decides, per server, and per tenant where the catalog says
(``acme = { database = "acme", confirm_writes = "always" }``, reloaded with it):

* ``never``: writes run as the model sends them;
* ``when_supported``: the user confirms each write when their client supports
  elicitation; other clients' writes run unasked;
* ``always``: every write is confirmed; a client that cannot ask gets a tool
  error saying why, and nothing runs.

The question shows the tenant, the query and what the plan says it will do
(`describe`). How it is asked depends on the connection:

* handshake-era sessions (2025-11-25 and earlier): a server-initiated
  ``elicitation/create`` request while the call waits (FastMCP's
  ``Context.elicit``), at most ``confirm_timeout`` seconds;
* 2026-07-28 connections have no server-initiated requests: the call answers
  ``input_required`` with the question (SEP-2322) and a request state that
  binds the answer to this caller, tenant, query and parameters, and to
  ``confirm_timeout`` from now; the client asks the user and retries the call
  with the answer. A retry whose state does not match runs nothing, and one
  confirmation runs one write: the same state and answer sent again (a
  client's retry after a lost answer, a replay) run nothing. The SDK seals
  the state (``RequestStateBoundary``: encrypted, bound to the request and
  the token's principal, under a key of this process), so it cannot be
  forged; the one-use record is in this process too.

Declined, cancelled, unanswered or expired: `WriteNotConfirmed`, nothing ran.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

from cachetools import TTLCache
from fastmcp import Context
from fastmcp.server.elicitation import AcceptedElicitation
from mcp.types import ClientCapabilities, ElicitationCapability
from mcp_types import (
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    InputRequiredResult,
)

from graphgate.backends.base import QueryPlan
from graphgate.backends.cypher_names import Names
from graphgate.config import ConfirmMode
from graphgate.errors import WriteNotConfirmed

__all__ = ["ConfirmMode", "WriteConfirmation", "describe"]


_REQUEST_KEY = "confirm_write"
_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "value": {
            "type": "boolean",
            "title": "Run this write",
            "description": "Tick to let the query change the database.",
        }
    },
    "required": ["value"],
}
_MAX_SHOWN_QUERY = 2000
_MODERN_VERSIONS = frozenset({"2026-07-28"})
_DID = {"decline": "declined", "cancel": "cancelled"}
_ELICITATION = ClientCapabilities(elicitation=ElicitationCapability())
MAX_OUTSTANDING = 100_000
"""Confirmations remembered as used (each until its deadline): one write per confirmation."""


def describe(tenant: str, query: str, plan: QueryPlan, names: Names) -> str:
    """The question: the tenant, the query, what the plan says it will change."""
    shown = query if len(query) <= _MAX_SHOWN_QUERY else query[:_MAX_SHOWN_QUERY] + "…"
    effects = ", ".join(plan.writes) if plan.writes else "no write operation in the plan"
    lines = [
        f"Run this write on database {tenant!r}?",
        "",
        shown,
        "",
        f"The plan: {effects}.",
    ]
    if names.labels:
        lines.append("Labels: " + ", ".join(names.labels))
    if names.relationship_types:
        lines.append("Relationship types: " + ", ".join(names.relationship_types))
    return "\n".join(lines)


class WriteConfirmation:
    """Whether and how a write is confirmed before it runs."""

    def __init__(self, default: ConfirmMode, timeout: float) -> None:
        self._default = default
        self._timeout = timeout
        # Used 2026-07-28 confirmations, until their deadline has passed anyway.
        self._used: TTLCache[str, bool] = TTLCache(MAX_OUTSTANDING, timeout + 1)

    def mode(self, tenant_mode: ConfirmMode | None) -> ConfirmMode:
        """The tenant's own mode from the catalog in force, else the server's."""
        return tenant_mode or self._default

    def wanted(self, tenant_mode: ConfirmMode | None) -> bool:
        return self.mode(tenant_mode) != "never"

    async def confirm(
        self,
        ctx: Context,
        caller_key: str,
        tenant: str,
        tenant_mode: ConfirmMode | None,
        query: str,
        params: Mapping[str, Any],
        question: str,
    ) -> InputRequiredResult | None:
        """None when the write may run; an ``input_required`` answer to send instead.

        Raises `WriteNotConfirmed` when it may not.
        """
        mode = self.mode(tenant_mode)
        modern = _protocol(ctx) in _MODERN_VERSIONS
        why = _why_not_asked(ctx, modern)
        if why is not None:
            if mode == "always":
                raise WriteNotConfirmed(
                    f"writes to {tenant!r} need your confirmation, and {why}; nothing ran. "
                    "Use a client that supports MCP elicitation, or ask the operator about "
                    "confirm_writes"
                )
            return None
        if modern:
            return self._ask_in_rounds(ctx, _binding(caller_key, tenant, query, params), question)
        await self._ask_now(ctx, question)
        return None

    async def _ask_now(self, ctx: Context, question: str) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                answer = await ctx.elicit(question, bool, response_title="Run this write")
        except TimeoutError:
            raise WriteNotConfirmed(
                f"no answer to the confirmation within {self._timeout:g} s; nothing ran"
            ) from None
        if not isinstance(answer, AcceptedElicitation):
            raise WriteNotConfirmed(f"you {_DID[answer.action]} the write; nothing ran")
        if answer.data is not True:
            raise WriteNotConfirmed("you did not tick 'Run this write'; nothing ran")

    def _ask_in_rounds(
        self, ctx: Context, binding: str, question: str
    ) -> InputRequiredResult | None:
        responses = ctx.input_responses
        answer = responses.get(_REQUEST_KEY) if responses is not None else None
        if answer is None:
            state = f"{time.time() + self._timeout:.0f}:{secrets.token_urlsafe(12)}:{binding}"
            ask = ElicitRequest(
                params=ElicitRequestFormParams(message=question, requested_schema=_SCHEMA)
            )
            return InputRequiredResult(input_requests={_REQUEST_KEY: ask}, request_state=state)
        deadline, _, rest = (ctx.request_state or "").partition(":")
        once, _, bound = rest.partition(":")
        if bound != binding:
            raise WriteNotConfirmed(
                "the confirmation was given for another query, database or user; nothing ran"
            )
        if not deadline.isdigit() or time.time() > int(deadline):
            raise WriteNotConfirmed(
                f"the confirmation came later than {self._timeout:g} s; nothing ran"
            )
        if not isinstance(answer, ElicitResult):
            raise WriteNotConfirmed("the client answered the confirmation with something else")
        if answer.action != "accept":
            raise WriteNotConfirmed(f"you {_DID[answer.action]} the write; nothing ran")
        if not answer.content or answer.content.get("value") is not True:
            raise WriteNotConfirmed("you did not tick 'Run this write'; nothing ran")
        if not once or once in self._used:
            raise WriteNotConfirmed(
                "this confirmation was already used for one write; nothing ran. Send the "
                "call again without it to be asked anew"
            )
        self._used[once] = True
        return None


def _protocol(ctx: Context) -> str | None:
    context = ctx.request_context
    return context.protocol_version if context is not None else None


def _why_not_asked(ctx: Context, modern: bool) -> str | None:
    """Why the user cannot be asked on this connection, or None when they can.

    The client must declare elicitation (on its session, or on this 2026-07-28
    request). A handshake-era session must also be able to carry a request
    from the server: not with ``json_response`` (one JSON answer per POST).
    """
    try:
        session = ctx.session
    except RuntimeError:
        return "this connection has no MCP session to ask you through"
    if not session.check_client_capability(_ELICITATION):
        return "this client cannot ask you (it does not support MCP elicitation)"
    if not modern and not session.can_send_request:
        return (
            "this connection cannot carry the question (the server answers with plain JSON, "
            "json_response = true; a 2026-07-28 client, or json_response = false, can be asked)"
        )
    return None


def _binding(caller_key: str, tenant: str, query: str, params: Mapping[str, Any]) -> str:
    """What a 2026-07-28 confirmation is for: this caller, tenant, query and parameters."""
    material = json.dumps([caller_key, tenant, query, params], sort_keys=True, default=str)
    return hashlib.sha256(material.encode()).hexdigest()
