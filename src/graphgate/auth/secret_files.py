"""Secret files that several graphgate processes may create at the same time."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path


def create_once(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` (mode 0600) unless another starter got there first.

    The content is hard-linked into place: the link fails if ``path`` exists,
    so replicas started together all end up reading the one file that won,
    never a torn one.
    """

    def link(temporary: Path) -> None:
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)

    _through_private_temporary(path, content, link)


def replace_private(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` (mode 0600), replacing any older copy atomically.

    Readers see the old file or the new one, never a torn or briefly
    world-readable one.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _through_private_temporary(path, content, lambda temporary: os.replace(temporary, path))


def _through_private_temporary(
    path: Path, content: bytes, put_in_place: Callable[[Path], None]
) -> None:
    """``content`` in a synced 0600 file beside ``path``, handed to ``put_in_place``."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        put_in_place(temporary)
    finally:
        temporary.unlink(missing_ok=True)
