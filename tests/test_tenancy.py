"""Routing: which database a call uses, and what stored state can (not) do."""

from __future__ import annotations

import pytest

from graphgate.auth.rights import Caller, Rights
from graphgate.config import Settings
from graphgate.errors import DatabaseNotPermitted, ForbiddenError
from graphgate.server import build_parts
from graphgate.state import MemoryStateStore
from graphgate.tenancy import Router


def make_router() -> Router:
    settings = Settings(tenants={"acme": "acme_db", "globex": "globex_db", "initech": "i"})
    parts = build_parts(settings)  # constructed, never opened: routing needs no database
    return Router(parts.catalog, parts.backends, parts.store, ttl=settings.session_ttl)


def caller(sub: str, *tenants: str, starting: str | None = None) -> Caller:
    rights = Rights(tenants=dict.fromkeys(tenants, "read"), starting=starting or min(tenants))
    return Caller("https://idp", sub, "client", rights)


async def test_explicit_argument_wins_and_maps_to_database_name() -> None:
    router = make_router()
    alice = caller("alice", "acme", "globex")
    target = await router.resolve(alice, "globex", None)
    assert (target.tenant, target.database) == ("globex", "globex_db")


async def test_starting_database_when_nothing_chosen() -> None:
    router = make_router()
    target = await router.resolve(caller("bob", "globex", "acme", starting="globex"), None, None)
    assert target.tenant == "globex"


@pytest.mark.parametrize(
    "name", ["globex", "GLOBEX", " acme", "acme ", "аcme", "acme\u200b", "acm", "acme_db", "*", ""]
)
async def test_anything_outside_rights_is_the_same_error(name: str) -> None:
    router = make_router()
    alice = caller("alice", "acme")
    with pytest.raises(DatabaseNotPermitted) as info:
        await router.resolve(alice, name, None)
    assert "is not available to you" in str(info.value)


async def test_unknown_and_forbidden_databases_are_indistinguishable() -> None:
    router = make_router()
    alice = caller("alice", "acme")
    with pytest.raises(DatabaseNotPermitted) as exists:
        await router.resolve(alice, "globex", None)
    with pytest.raises(DatabaseNotPermitted) as missing:
        await router.resolve(alice, "nosuch", None)
    assert str(exists.value).replace("globex", "X") == str(missing.value).replace("nosuch", "X")


async def test_choice_is_per_user_and_rechecked_against_current_rights() -> None:
    router = make_router()
    alice = caller("alice", "acme", "globex")
    await router.choose(alice, "globex", "session-1")
    assert (await router.resolve(alice, None, "session-1")).tenant == "globex"
    # Another user presenting the same session id gets nothing of alice's.
    mallory = caller("mallory", "acme", "globex")
    assert (await router.resolve(mallory, None, "session-1")).tenant == "acme"
    # Alice's refreshed token lost globex: the stored choice no longer applies.
    alice_later = caller("alice", "acme")
    assert (await router.resolve(alice_later, None, "session-1")).tenant == "acme"


async def test_use_database_cannot_widen_rights() -> None:
    router = make_router()
    with pytest.raises(DatabaseNotPermitted):
        await router.choose(caller("alice", "acme"), "globex", None)


async def test_resolve_many_defaults_to_all_permitted() -> None:
    router = make_router()
    admin = caller("root", "acme", "globex", "initech")
    assert [t.tenant for t in router.resolve_many(admin, None)] == ["acme", "globex", "initech"]
    assert [t.tenant for t in router.resolve_many(admin, ["*"])] == ["acme", "globex", "initech"]
    with pytest.raises(DatabaseNotPermitted):
        router.resolve_many(caller("alice", "acme"), ["acme", "globex"])


async def test_no_rights_at_all_is_forbidden() -> None:
    router = make_router()
    nobody = Caller("i", "s", "c", Rights())
    with pytest.raises(ForbiddenError):
        await router.resolve(nobody, None, None)


async def test_memory_store_expires_and_stays_bounded() -> None:
    store = MemoryStateStore(max_entries=3)
    await store.set("a", "1", ttl=0.0)
    assert await store.get("a") is None
    for index in range(10):
        await store.set(f"k{index}", "v", ttl=60)
    assert len(store) == 3
    assert await store.get("k9") == "v"
    assert await store.get("k0") is None
