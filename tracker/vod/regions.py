"""VOD clients by region: one VodClient per region, all signing with one credentials source."""

from __future__ import annotations

import logging

from tracker.closing import Closing
from tracker.config import Settings
from tracker.vod.client import VodClient
from tracker.vod.credentials import Credentials, credentials_from_settings

log = logging.getLogger(__name__)


class VodClients(Closing):
    """The process's VOD clients, made on first use of a region and closed together.

    Calls cannot reach another region's media (vod-reference.md 1.1), so each job is sent to
    the client of its own region; the endpoint comes from `Settings.vod_url_for`.
    """

    def __init__(
        self, settings: Settings, credentials: Credentials, *, backoff: float = 0.2
    ) -> None:
        self.settings = settings
        self.credentials = credentials
        self.backoff = backoff
        self._clients: dict[str, VodClient] = {}

    @classmethod
    def of(cls, settings: Settings, *clients: VodClient) -> VodClients:
        """Clients made elsewhere (tests, the demo), by their regions; they share credentials."""
        if not clients:
            raise ValueError("VodClients.of needs at least one client")
        made = cls(settings, clients[0].credentials)
        for client in clients:
            made._clients[client.region] = client
        return made

    def __repr__(self) -> str:
        return f"VodClients({sorted(self._clients)}, {self.credentials})"

    @property
    def default(self) -> VodClient:
        """The client of TRACKER_VOD_REGION."""
        return self.for_region(self.settings.vod_region)

    def for_region(self, region: str) -> VodClient:
        client = self._clients.get(region)
        if client is None:
            client = VodClient(
                self.settings, region=region, credentials=self.credentials, backoff=self.backoff
            )
            self._clients[region] = client
        return client

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()


def vod_clients(settings: Settings) -> VodClients | None:
    """The clients for the configured credentials (their source said in one line), or None:
    the caller says what that turns off, naming SOURCES_HINT."""
    credentials = credentials_from_settings(settings)
    if credentials is None:
        return None
    log.info("VOD credentials from %s", credentials.source)
    return VodClients(settings, credentials)
