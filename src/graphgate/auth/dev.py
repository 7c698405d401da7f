"""Dev mode: graphgate is its own issuer, with a key pair kept in the data directory.

``graphgate token`` mints tokens with `mint_dev_token`; on loopback the dev
issuer also signs people in through the browser
(`graphgate.auth.dev_authorization`), minting the same tokens. The server
verifies them against the same key, locally (no HTTP). The issuer is
``settings.dev_issuer`` (the public URL), so dev tokens pass the very checks
real ones do: ``iss``, ``aud``, ``exp``, scopes and tenants.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from graphgate.auth.secret_files import create_once
from graphgate.auth.tokens import JwtVerifier, KeySet, TokenVerifierSettings
from graphgate.config import Settings, split_claim_path, validate_tenant_name

logger = logging.getLogger(__name__)

__all__ = [
    "DEV_ALGORITHM",
    "DevKeys",
    "dev_verifier",
    "mint_dev_token",
    "record_dev_issuer",
    "recorded_dev_issuer",
]

DEV_ALGORITHM: Final = "ES256"
KEY_FILE: Final = "dev-signing-key.pem"
MAX_TTL: Final = 30 * 24 * 3600
DEV_CLIENT_ID: Final = "graphgate-cli"
ISSUER_FILE: Final = "dev-issuer.json"


def record_dev_issuer(settings: Settings) -> None:
    """Note in the data dir which issuer and audience the running dev server uses.

    `graphgate token` reads it, so a token minted with the same data dir
    names the right issuer without repeating ``--port`` or ``--public-url``.
    """
    from graphgate.auth.secret_files import replace_private

    record = {"issuer": settings.dev_issuer, "public_url": settings.dev_issuer}
    replace_private(settings.data_dir / ISSUER_FILE, json.dumps(record).encode())


def recorded_dev_issuer(data_dir: Path) -> str | None:
    """The public URL a dev server on ``data_dir`` last announced, if any."""
    try:
        record = json.loads((data_dir / ISSUER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    url = record.get("public_url") if isinstance(record, dict) else None
    return url if isinstance(url, str) and url.startswith(("http://", "https://")) else None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class DevKeys:
    """The dev issuer's EC P-256 key pair; ``kid`` is its RFC 7638 thumbprint."""

    private_key: ec.EllipticCurvePrivateKey
    public_jwk: Mapping[str, str]

    @property
    def kid(self) -> str:
        return self.public_jwk["kid"]

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(self.public_jwk)]}

    @classmethod
    def from_private_key(cls, private_key: ec.EllipticCurvePrivateKey) -> DevKeys:
        numbers = private_key.public_key().public_numbers()
        size = (private_key.curve.key_size + 7) // 8
        members = {
            "crv": "P-256",
            "kty": "EC",
            "x": _b64url(numbers.x.to_bytes(size, "big")),
            "y": _b64url(numbers.y.to_bytes(size, "big")),
        }
        # RFC 7638 §3: the required members, lexicographic order, no whitespace.
        canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode()
        kid = _b64url(hashlib.sha256(canonical).digest())
        return cls(private_key, {**members, "kid": kid, "use": "sig", "alg": DEV_ALGORITHM})

    @classmethod
    def load_or_create(cls, data_dir: Path) -> DevKeys:
        """Read ``<data_dir>/dev-signing-key.pem``, creating it (mode 0600) if absent.

        The key survives restarts, so tokens minted earlier stay valid. It is
        written to a temporary file and hard-linked into place, which fails if
        another process (the server and ``graphgate token`` starting together)
        got there first; then that key is used.
        """
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = data_dir / KEY_FILE
        if not path.exists():
            cls._create(path)
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            logger.warning("%s was readable by others (mode %o); setting 0600", path, mode)
            path.chmod(0o600)
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey) or not isinstance(
            loaded.curve, ec.SECP256R1
        ):
            raise ValueError(
                f"{path} does not hold an EC P-256 private key; delete it to "
                "have graphgate create a new one"
            )
        return cls.from_private_key(loaded)

    @staticmethod
    def _create(path: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        create_once(path, pem)


def _set_claim(claims: dict[str, Any], path: str, value: Any) -> None:
    """Put ``value`` at a dotted path (``realm_access.roles``), the way issuers nest it."""
    node = claims
    *parents, last = split_claim_path(path)
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"claim path {path!r} collides with another claim")
        node = child
    node[last] = value


def mint_dev_token(
    settings: Settings,
    sub: str,
    tenants: list[str],
    admin: bool,
    ttl: int,
    scopes: Sequence[str] | None = None,
    *,
    client_id: str = DEV_CLIENT_ID,
    keys: DevKeys | None = None,
) -> str:
    """A token from the dev issuer, shaped like the configured issuer's claims.

    ``tenants`` entries are ``name`` or ``name:write`` (``name:read``); the
    configured ``tenant_prefix`` is added and the list is put at
    ``tenants_claim``; ``admin`` puts ``admin_value`` at ``admin_claim``.
    ``scopes`` defaults to ``required_scopes``. Tenants are checked for syntax
    only: a token naming tenants outside the catalog is valid and simply
    grants nothing there. ``client_id`` names the client the token is for
    (``azp``): ``graphgate-cli`` for ``graphgate token``, the registered
    client for the dev authorization server; ``keys`` saves reading the key
    file again.
    """
    if not sub or not isinstance(sub, str):
        raise ValueError("sub: give a subject name")
    longest = min(MAX_TTL, int(settings.max_token_lifetime))
    if not 0 < ttl <= longest:
        raise ValueError(
            f"ttl: must be between 1 and {longest} seconds (max_token_lifetime of the server)"
        )
    entries: list[str] = []
    for entry in tenants:
        name, _, access = entry.strip().partition(":")
        validate_tenant_name(name)
        if access not in {"", "read", "write"}:
            raise ValueError(f"tenant {entry!r}: use NAME, NAME:read or NAME:write")
        entries.append(settings.tenant_prefix + entry.strip())
    keys = keys or DevKeys.load_or_create(settings.data_dir)
    now = int(time.time())
    chosen = list(settings.required_scopes if scopes is None else scopes)
    claims: dict[str, Any] = {
        "iss": settings.dev_issuer,
        "aud": settings.token_audience,
        "sub": sub,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": secrets.token_urlsafe(16),
        "azp": client_id,
        "client_id": client_id,
        "scope": " ".join(chosen),
    }
    _set_claim(claims, settings.tenants_claim, entries)
    if admin:
        _set_claim(claims, settings.admin_claim, [settings.admin_value])
    return jwt.encode(
        claims,
        keys.private_key,
        algorithm=DEV_ALGORITHM,
        headers={"kid": keys.kid, "typ": "at+jwt"},
    )


def dev_verifier(settings: Settings, keys: DevKeys | None = None) -> JwtVerifier:
    """The verifier for dev tokens: the local public key, no HTTP."""
    keys = keys or DevKeys.load_or_create(settings.data_dir)
    key_set = KeySet(None, initial=keys.jwks, algorithms=[DEV_ALGORITHM])
    return JwtVerifier(
        key_set,
        TokenVerifierSettings(
            issuer=settings.dev_issuer,
            audience=settings.token_audiences,
            algorithms=[DEV_ALGORITHM],
            required_scopes=settings.required_scopes,
            leeway=settings.clock_leeway,
            max_lifetime=settings.max_token_lifetime,
        ),
        base_url=settings.public_url,
    )
