"""The DNS resolver of the connections to users' URLs (aiohttp's hook for it)."""

from __future__ import annotations

import socket
from collections.abc import Iterable

import anyio.to_thread
from aiohttp.abc import AbstractResolver, ResolveResult

from providers.urlsafety import checked_addresses


class GuardedResolver(AbstractResolver):
    """Resolves a name and hands the connector only addresses that passed the SSRF
    checks (providers.urlsafety): a name that resolves inside now (DNS rebinding)
    is refused at connect time, whatever it resolved to when it was saved."""

    def __init__(self, *, allowed: Iterable[str]) -> None:
        self._allowed = list(allowed)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        # getaddrinfo blocks; keep it off the event loop.
        addresses = await anyio.to_thread.run_sync(
            lambda: checked_addresses(host, port, allowed=self._allowed)
        )
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        pass
