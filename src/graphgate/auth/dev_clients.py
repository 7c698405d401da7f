"""The clients registered at the dev issuer, bounded and kept in the data directory.

MCP clients register once and keep their ``client_id`` (Claude Code and
mcp-remote store it next to their tokens). Were registrations held in memory
only, restarting ``graphgate serve --demo`` would strand every such client:
its next sign-in would end on "client not found" in the browser until its
stored registration was deleted by hand. So they are written to
``<data_dir>/dev-clients.json`` (mode 0600) and read back at start.

At most `MAX_CLIENTS` are kept; registering one more forgets the oldest,
which then simply registers again. A file that cannot be read, or entries that
no longer pass the checks, are dropped with a warning: the worst case is a
client registering anew.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Final

from mcp.shared.auth import OAuthClientInformationFull
from pydantic import ValidationError

from graphgate.auth.secret_files import replace_private

__all__ = ["CLIENTS_FILE", "MAX_CLIENTS", "DevClientStore"]

logger = logging.getLogger(__name__)

CLIENTS_FILE: Final = "dev-clients.json"
MAX_CLIENTS: Final = 200


class DevClientStore:
    """Registered clients by id, oldest first; ``accept`` re-checks stored ones on load."""

    def __init__(
        self,
        data_dir: Path,
        accept: Callable[[OAuthClientInformationFull], bool],
        *,
        capacity: int = MAX_CLIENTS,
    ) -> None:
        self.path = data_dir / CLIENTS_FILE
        self.capacity = capacity
        self._clients: OrderedDict[str, OAuthClientInformationFull] = OrderedDict()
        for client in self._read():
            if accept(client):
                self._clients[client.client_id] = client
        while len(self._clients) > capacity:
            self._clients.popitem(last=False)

    def __len__(self) -> int:
        return len(self._clients)

    def get(self, client_id: str) -> OAuthClientInformationFull | None:
        return self._clients.get(client_id)

    def add(self, client: OAuthClientInformationFull) -> None:
        self._clients[client.client_id] = client
        self._clients.move_to_end(client.client_id)
        while len(self._clients) > self.capacity:
            forgotten, _ = self._clients.popitem(last=False)
            logger.info("dev issuer: forgot the oldest registered client %s", forgotten)
        self._write()

    def _read(self) -> list[OAuthClientInformationFull]:
        try:
            entries = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            logger.warning("ignoring %s (%s): clients will register again", self.path, exc)
            return []
        if not isinstance(entries, list):
            logger.warning("ignoring %s: not a list of clients", self.path)
            return []
        clients = []
        for entry in entries:
            try:
                clients.append(OAuthClientInformationFull.model_validate(entry))
            except ValidationError:
                logger.warning("ignoring an unreadable client in %s", self.path)
        return clients

    def _write(self) -> None:
        records = [
            client.model_dump(mode="json", exclude_none=True) for client in self._clients.values()
        ]
        try:
            replace_private(self.path, json.dumps(records, separators=(",", ":")).encode())
        except OSError as exc:
            # The registration still holds until the server stops.
            logger.warning("could not save registered clients to %s: %s", self.path, exc)
