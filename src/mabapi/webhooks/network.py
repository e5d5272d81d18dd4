"""Sending one webhook request safely: the URL's host is resolved and every address
checked (no loopback, link-local, private or otherwise non-public address unless allowed),
the request goes to the checked address (so DNS cannot change between check and
connection), redirects are followed by hand and checked again, and nothing waits more
than 5 seconds."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

TIMEOUT_SECONDS = 5.0
MAX_REDIRECTS = 3


class UnsafeURLError(ValueError):
    """The URL may not be called: its scheme, or an address its host resolves to."""


def check_url_shape(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL with a host and no credentials."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeURLError("webhook URLs must start with http:// or https://")
    if not parts.hostname:
        raise UnsafeURLError("the webhook URL has no host")
    if parts.username or parts.password:
        raise UnsafeURLError("put no credentials in the webhook URL; deliveries are signed")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as error:
        raise UnsafeURLError(f"the webhook URL's port is not valid: {error}") from None
    return parts.scheme, parts.hostname, port


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


async def lookup(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (the system resolver, off the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def resolve(url: str, *, allow_private: bool) -> tuple[str, str]:
    """The URL's host and an address of it that may be called. Every address the host
    resolves to must be public (one private answer among public ones is refused too)."""
    _, host, port = check_url_shape(url)
    try:
        addresses = [ipaddress.ip_address(a) for a in await lookup(host, port)]
    except (OSError, ValueError) as error:
        raise UnsafeURLError(f"the webhook host {host!r} does not resolve: {error}") from None
    if not addresses:
        raise UnsafeURLError(f"the webhook host {host!r} does not resolve")
    if not allow_private:
        refused = sorted({str(a) for a in addresses if not _public(a)})
        if refused:
            raise UnsafeURLError(
                f"the webhook host {host!r} resolves to a non-public address "
                f"({', '.join(refused)}): "
                "loopback, link-local and private addresses are refused (set "
                "MABAPI_WEBHOOK_ALLOW_PRIVATE=true to allow them)"
            )
    return host, str(addresses[0])


@dataclass(frozen=True, slots=True)
class Outcome:
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _pinned(url: str, address: str) -> str:
    """`url` with its host replaced by the checked address."""
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


async def post(
    client: httpx.AsyncClient,
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    allow_private: bool,
) -> Outcome:
    """POST `body` to `url`, following up to 3 redirects (each checked like the URL)."""
    started = time.perf_counter()

    def elapsed() -> int:
        return int((time.perf_counter() - started) * 1000)

    target = url
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            for _ in range(MAX_REDIRECTS + 1):
                host, address = await resolve(target, allow_private=allow_private)
                scheme, _, port = check_url_shape(target)
                default_port = 443 if scheme == "https" else 80
                host_header = host if port == default_port else f"{host}:{port}"
                response = await client.post(
                    _pinned(target, address),
                    content=body,
                    headers={**headers, "Host": host_header},
                    extensions={"sni_hostname": host},
                )
                if response.is_redirect and "location" in response.headers:
                    target = urljoin(target, response.headers["location"])
                    continue
                return Outcome(response.status_code, None, elapsed())
            return Outcome(None, f"more than {MAX_REDIRECTS} redirects", elapsed())
    except UnsafeURLError as error:
        return Outcome(None, str(error), elapsed())
    except TimeoutError:
        return Outcome(None, f"timed out after {TIMEOUT_SECONDS:g} s", elapsed())
    except httpx.HTTPError as error:
        return Outcome(None, f"{type(error).__name__}: {error}"[:500], elapsed())


def client() -> httpx.AsyncClient:
    """The delivery loop's client: no redirects followed for us, no proxy or netrc from
    the environment, 5-second timeouts."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(TIMEOUT_SECONDS),
        follow_redirects=False,
        trust_env=False,
    )
