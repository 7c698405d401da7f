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
costs one ``stat`` per half second. A file is never read past
`MAX_SETTINGS_BYTES`, and each failure (too large, nested too deeply, deleted,
a symlink loop, invalid) is one log line with the catalog in force kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
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
    "MAX_SETTINGS_BYTES",
    "CatalogReloader",
    "SettingsFileTooLarge",
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
MAX_SETTINGS_BYTES = 4 * 1024 * 1024
"""The largest settings file a reload reads (a 10,000-tenant catalog is about 0.6 MB):
a runaway template cannot make graphgate parse, hash or hold an unbounded file."""
RACY_SECONDS = 2.0
"""A file modified this recently may change again within the file system's timestamp
granularity without its identity changing: its content is hashed on every poll until
it is older (git's "racily clean" rule)."""


class SettingsFileTooLarge(ValueError):
    """The settings file is over `MAX_SETTINGS_BYTES`: refused before it is read."""

    def __init__(self, path: Path, size: int) -> None:
        super().__init__(
            f"{path} is {size} bytes, over the {MAX_SETTINGS_BYTES} bytes a reload reads; "
            "split the catalog or use discovery (discover = true) for very many tenants"
        )


@dataclass(frozen=True, slots=True)
class SettingsSource:
    """Where the running settings came from: the file and the command line's flags."""

    path: Path
    flags: Mapping[str, Any] = field(default_factory=dict)

    def load(self) -> Settings:
        """The settings the file holds now; `SettingsFileTooLarge` before reading a huge one."""
        size = os.stat(self.path).st_size  # a symlink loop or a deleted file: OSError
        if size > MAX_SETTINGS_BYTES:
            raise SettingsFileTooLarge(self.path, size)
        return load_settings(self.path, **dict(self.flags))


def needs_restart(running: Settings, new: Settings) -> list[str]:
    """The settings outside the catalog whose value differs between the two."""
    changed = []
    for name in type(running).model_fields:
        if name not in CATALOG_FIELDS and getattr(running, name) != getattr(new, name):
            changed.append(name)
    return changed


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "the settings file nests tables or arrays too deeply to read"
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
            except (ValidationError, ValueError, ConfigError, OSError, RecursionError) as exc:
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
    """The content's hash; None when it cannot be read (or grew past the bound meanwhile)."""
    try:
        with path.open("rb") as file:
            content = file.read(MAX_SETTINGS_BYTES + 1)
    except OSError:
        return None
    if len(content) > MAX_SETTINGS_BYTES:
        return None
    return hashlib.sha256(content).digest()


def _unreadable(path: Path) -> str | None:
    """Why ``path`` cannot be read now (deleted, a symlink loop, ...), or None."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


class SettingsFileWatcher:
    """Calls ``on_change`` when the file's content changes (also through a symlink swap).

    A file that goes missing or unreadable (deleted, a symlink loop) is said
    once in the log and otherwise ignored: the catalog in force stays until a
    readable file returns. A file too large to read is handed to the reload,
    which refuses it with one line (`SettingsFileTooLarge`).
    """

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
        self._racy = self._identity is not None
        self._missing: str | None = None

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.poll()
            except Exception:  # the watcher outlives any one reload
                logger.exception("catalog reload failed unexpectedly")

    async def poll(self) -> None:
        """One look at the file; reloads when its content changed."""
        identity = _identity(self._path)
        if identity is None:
            # A file briefly missing mid-swap is not a change; its return is.
            reason = _unreadable(self._path)
            if reason is not None and self._missing is None:
                logger.warning(
                    "settings file %s cannot be read (%s); the catalog in force stays until it can",
                    self._path,
                    reason,
                )
            self._missing = reason
            return
        if self._missing is not None:
            logger.info("settings file %s can be read again", self._path)
            self._missing = None
        if identity == self._identity and not self._racy:
            return
        self._identity = identity
        self._racy = time.time_ns() - identity[4] < RACY_SECONDS * 1e9
        if identity[3] > MAX_SETTINGS_BYTES:  # not read: the reload refuses it by its size
            digest: bytes | None = repr(identity).encode()
        else:
            digest = _digest(self._path)
        if digest is None or digest == self._digest:
            return
        self._digest = digest
        await self._on_change()
