"""The dev issuer's sign-in page: pick a demo user, no password.

Plain HTML, every value escaped, no scripts. The page holds one form that
posts the pending authorization's one-time id back with the chosen user; a
page elsewhere cannot forge that post, since it never sees the id (it is in
the ``/authorize`` redirect, which a cross-origin page cannot read). The
headers forbid framing (clickjacking) and caching, and load nothing from
anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Final

from starlette.responses import HTMLResponse, Response

from graphgate.demo import DemoUser
from graphgate.errors import SignInRefused, to_http_response

__all__ = ["sign_in_page", "sign_in_problem"]

_HEADERS: Final = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
_STYLE: Final = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:44rem;margin:2rem auto;padding:0 1rem}"
    "table{border-collapse:collapse;width:100%}td,th{padding:.4rem;text-align:left;"
    "border-bottom:1px solid #ddd;vertical-align:top}button{font:inherit;padding:.3rem .9rem}"
    ".note{color:#555;font-size:.9rem}"
)


def _document(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )


def sign_in_page(
    *,
    action: str,
    request_id: str,
    client_name: str,
    redirect_uri: str,
    resource: str,
    users: Sequence[DemoUser],
    writes_allowed: bool,
) -> HTMLResponse:
    """The list of demo users, each with their tenants and access, to sign in as."""
    rows = []
    for user in users:
        access = "<br>".join(
            f"{escape(tenant)}: {escape(rights)}" for tenant, rights in user.access()
        )
        rows.append(
            "<tr>"
            f'<td><button type="submit" name="user" value="{escape(user.name)}">'
            f"{escape(user.name)}</button></td><td>{access or 'no tenants'}</td></tr>"
        )
    writes = (
        ""
        if writes_allowed
        else '<p class="note">This server is read-only: restart it with '
        "<code>--allow-writes</code> for write access to take effect.</p>"
    )
    body = (
        "<h1>Sign in to graphgate</h1>"
        f"<p><strong>{escape(client_name)}</strong> wants to use graphgate at "
        f"<code>{escape(resource)}</code>. Pick who to be:</p>"
        f'<form method="post" action="{escape(action)}">'
        f'<input type="hidden" name="request" value="{escape(request_id)}">'
        "<table><thead><tr><th>User</th><th>Tenants and access</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        '<p><button type="submit" name="deny" value="1">Cancel</button></p></form>'
        f"{writes}"
        '<p class="note">This is graphgate\'s development issuer: no passwords, and only '
        "for this machine. You will be sent back to "
        f"<code>{escape(redirect_uri)}</code>.</p>"
    )
    return HTMLResponse(_document("Sign in to graphgate", body), headers=_HEADERS)


def sign_in_problem(message: str) -> Response:
    """A page saying why the sign-in cannot go on, and what to do."""
    return to_http_response(SignInRefused(message), headers=_HEADERS, html_page=True)
