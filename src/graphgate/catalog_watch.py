"""Reloading the catalog from the settings file: on change, and on SIGHUP.

What a reload does, in order (`CatalogReloader.reload`):

1. Read the whole settings file again, with the same flags and environment
   as at start. A file that does not validate changes nothing: the catalog in
   force stays, one log line says why, ``graphgate_catalog_reloads_total
   {outcome="failed"}`` counts it.
2. Compare every setting outside the catalog with the running ones; the
   changed ones are named in one log line ("needs a restart: port, auth")
   and none of them is applied, not even in part: the new catalog is built
   from the running settings with only ``[tenants]``, ``[backends]`` and the
   ``backend*`` settings taken from the file.
3. Open the backends the new catalog adds (or whose settings changed), swap
   the catalog in, then drain and close the ones it dropped
   (`graphgate.backends.registry.Backends`).

`SettingsFileWatcher` notices a change by polling the file's identity
(inode, size, modification time, where its symlinks lead) twice a second and
then its content hash: Kubernetes updates a mounted ConfigMap by swapping a
``..data`` symlink, which inotify on the file itself would miss, and polling
costs one ``stat`` per half second.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from graphgate.backends.registry import Backends
from graphgate.catalog import Catalog, LiveCatalog
from graphgate.config import Settings, load_settings
from graphgate.errors import ConfigError
from graphgate.observability import Metrics

__all__ = [
    "CATALOG_FIELDS",
    "CatalogReloader",
    "SettingsFileWatcher",
    "SettingsSource",
    "needs_restart",
]

logger = logging.getLogger(__name__)

CATALOG_FIELDS = frozenset(
    {"tenants", "backends", "backend", "backend_user", "backend_password", "backend_dialect"}
)
"""The settings a reload applies; every other one needs a restart."""

POLL_INTERVAL = 0.5
"""Seconds between two looks at the settings file: a change is served within a second."""


@dataclass(frozen=True, slots=True)
class SettingsSource:
    """Where the running settings came from: the file and the command line's flags."""

    path: Path
    flags: Mapping[str, Any] = field(default_factory=dict)

    def load(self) -> Settings:
        return load_settings(self.path, **dict(self.flags))


def needs_restart(running: Settings, new: Settings) -> list[str]:
    """The settings outside the catalog whose value differs between the two."""
    changed = []
    for name in type(running).model_fields:
        if name not in CATALOG_FIELDS and getattr(running, name) != getattr(new, name):
            changed.append(name)
    return changed


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors()
        )
    return " ".join(str(exc).split())


class CatalogReloader:
    """Builds, checks and swaps in the catalog of the settings file, one reload at a time."""

    def __init__(
        self,
        source: SettingsSource,
        running: Settings,
        live: LiveCatalog,
        backends: Backends,
        metrics: Metrics,
    ) -> None:
        self._source = source
        self._running = running
        self._live = live
        self._backends = backends
        self._metrics = metrics
        self._lock = asyncio.Lock()

    async def reload(self, reason: str = "file") -> bool:
        """Apply the file's catalog; False (and nothing changed) when it does not validate."""
        async with self._lock:
            try:
                fresh = await asyncio.to_thread(self._source.load)
                applied = self._running.model_copy(
                    update={name: getattr(fresh, name) for name in CATALOG_FIELDS}
                )
                candidate = self._live.current.reloaded(applied)
            except (ValidationError, ValueError, ConfigError, OSError) as exc:
                logger.error(
                    "catalog reload (%s) failed, the catalog in force stays: %s",
                    reason,
                    _one_line(exc),
                )
                self._metrics.catalog_reloads.labels(reason, "failed").inc()
                return False
            restart = needs_restart(self._running, fresh)
            if restart:
                logger.warning(
                    "settings changed in the file; needs a restart: %s "
                    "(not applied; the catalog part of the file is)",
                    ", ".join(restart),
                )
            opened = await self._backends.open_for(candidate)
            # Built again after the await: discovery may have swapped meanwhile.
            new = self._live.current.reloaded(applied)
            old = self._live.current
            self._live.swap(new)
            retired = self._backends.retire_missing(new)
            self._metrics.catalog_reloads.labels(reason, "ok").inc()
            _log_change(reason, old, new, opened, retired)
            return True


def _log_change(
    reason: str, old: Catalog, new: Catalog, opened: list[str], retired: list[str]
) -> None:
    added = sorted(set(new.tenants) - set(old.tenants))
    removed = sorted(set(old.tenants) - set(new.tenants))
    kept = set(old.tenants) & set(new.tenants)
    moved = sorted(name for name in kept if old.tenants[name] != new.tenants[name])
    logger.info(
        "catalog reloaded (%s): %d tenants; added %s; removed %s; moved %s; "
        "backends opened %s; closing %s",
        reason,
        len(new.tenants),
        ", ".join(added) or "none",
        ", ".join(removed) or "none",
        ", ".join(moved) or "none",
        ", ".join(opened) or "none",
        ", ".join(retired) or "none",
    )


def _identity(path: Path) -> tuple[Any, ...] | None:
    try:
        info = os.stat(path)  # follows symlinks: a swapped ..data link shows as a new inode
        return (os.path.realpath(path), info.st_ino, info.st_dev, info.st_size, info.st_mtime_ns)
    except OSError:
        return None


def _digest(path: Path) -> bytes | None:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None


class SettingsFileWatcher:
    """Calls ``on_change`` when the file's content changes (also through a symlink swap)."""

    def __init__(
        self,
        path: Path,
        on_change: Callable[[], Awaitable[object]],
        *,
        interval: float = POLL_INTERVAL,
    ) -> None:
        self._path = path
        self._on_change = on_change
        self._interval = interval
        self._identity = _identity(path)
        self._digest = _digest(path)

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            identity = _identity(self._path)
            if identity == self._identity or identity is None:
                # A file briefly missing mid-swap is not a change; its return is.
                continue
            self._identity = identity
            digest = _digest(self._path)
            if digest is None or digest == self._digest:
                continue
            self._digest = digest
            try:
                await self._on_change()
            except Exception:  # the watcher outlives any one reload
                logger.exception("catalog reload failed unexpectedly")
