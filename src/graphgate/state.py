"""Building the state store named by ``state_url``."""

from __future__ import annotations

from graphgate.config import Settings
from graphgate.errors import ConfigError
from graphgate.tenancy import MemoryStateStore, StateStore


def create_state_store(settings: Settings) -> StateStore:
    url = settings.state_url
    if url in {"", "memory://"}:
        return MemoryStateStore()
    raise ConfigError(f"state_url {url!r}: only memory:// is supported by this build")
