"""Helpers for the auth tests: keys, token minting, a local issuer on loopback."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64url(json.dumps(value).encode())


@dataclass
class SigningKey:
    kid: str
    private: PrivateKey
    alg: str

    def public_jwk(self, **extra: Any) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.alg)
        data: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))
        data.update({"kid": self.kid, "use": "sig", **extra})
        return data

    def sign(self, claims: Mapping[str, Any], **headers: Any) -> str:
        merged = {"kid": self.kid, **headers}
        return jwt.encode(
            dict(claims),
            self.private,
            algorithm=self.alg,
            headers={name: value for name, value in merged.items() if value is not None},
        )


def rsa_key(kid: str, alg: str = "RS256", bits: int = 2048) -> SigningKey:
    return SigningKey(kid, rsa.generate_private_key(public_exponent=65537, key_size=bits), alg)


def ec_key(kid: str) -> SigningKey:
    return SigningKey(kid, ec.generate_private_key(ec.SECP256R1()), "ES256")


def ed_key(kid: str) -> SigningKey:
    return SigningKey(kid, ed25519.Ed25519PrivateKey.generate(), "EdDSA")


def claims_for(
    issuer: str, audience: str | list[str], *, ttl: int = 600, **extra: Any
) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": "alice",
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "azp": "client-1",
        "scope": "openid mcp:tools",
        "tenants": ["acme"],
    }
    claims.update(extra)
    return {key: value for key, value in claims.items() if value is not None}


@dataclass
class IssuerState:
    """What the fake issuer serves; tests mutate it while the server runs."""

    issuer: str = ""
    jwks: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    metadata_extra: dict[str, Any] = field(default_factory=dict)
    down: bool = False
    hits: Counter[str] = field(default_factory=Counter)

    def metadata(self) -> dict[str, Any]:
        base = self.issuer
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/protocol/openid-connect/auth",
            "token_endpoint": f"{base}/protocol/openid-connect/token",
            "jwks_uri": f"{base}/protocol/openid-connect/certs",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "mcp:tools"],
            "authorization_response_iss_parameter_supported": True,
            **self.metadata_extra,
        }


def issuer_app(state: IssuerState, realm_path: str) -> Starlette:
    """A tiny OIDC issuer: discovery document and JWKS, switchable to 'down' (HTTP 503)."""

    async def metadata(request: Request) -> Response:
        state.hits["metadata"] += 1
        if state.down:
            return PlainTextResponse("down", status_code=503)
        return JSONResponse(state.metadata())

    async def certs(request: Request) -> Response:
        state.hits["jwks"] += 1
        if state.down:
            return PlainTextResponse("down", status_code=503)
        return JSONResponse(state.jwks)

    return Starlette(
        routes=[
            Route(f"{realm_path}/.well-known/openid-configuration", metadata),
            Route(f"{realm_path}/protocol/openid-connect/certs", certs),
        ]
    )


@contextmanager
def serve(app: ASGIApp) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port in a thread; yield its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="auto")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def closed_port_url() -> str:
    """A loopback URL nothing listens on (the port was just released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
