"""Sending one webhook request safely: the URL's host is resolved and every address
checked (only public unicast addresses: every IANA special-purpose range is refused, and an
IPv4 address embedded in an IPv6 one is unwrapped and checked as IPv4), the request goes
to the checked address (so DNS cannot change between check and connection), redirects are
followed by hand and checked again, at most RESPONSE_BYTES of an answer are read (raw:
never decompressed), every text recorded is at most ERROR_CHARS long, and nothing waits
more than 5 seconds."""

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
# What is read of a receiver's answer (the status is all that is kept); the rest is
# dropped with the connection. One network read may bring up to 64 KiB more.
RESPONSE_BYTES = 4096
# The longest error text recorded (webhook_attempts.error is VARCHAR(500)).
ERROR_CHARS = 500
# How much of a host name an error message quotes.
HOST_CHARS = 80

# The IANA special-purpose address registries (IPv4 and IPv6), plus multicast, the
# deprecated site-local fec0::/10 and everything outside IPv6 global unicast 2000::/3.
# Every block here is refused, whatever the registry says of its global reachability.
_SPECIAL_V4 = tuple(
    ipaddress.IPv4Network(block)
    for block in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.31.196.0/24",
        "192.52.193.0/24", "192.88.99.0/24", "192.168.0.0/16", "192.175.48.0/24",
        "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    )
)  # fmt: skip
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
_SPECIAL_V6 = tuple(
    ipaddress.IPv6Network(block)
    for block in (
        "2001::/23", "2001:db8::/32", "2002::/16", "2620:4f:8000::/48", "3fff::/20",
    )
)  # fmt: skip
# IPv6 forms that carry an IPv4 address in their last 32 bits: unwrapped, then checked.
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")  # IPv4-mapped
_COMPATIBLE = ipaddress.IPv6Network("::/96")  # IPv4-compatible (deprecated)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # the well-known NAT64 prefix


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


def bounded(text: str, limit: int = ERROR_CHARS) -> str:
    """`text` cut to `limit` characters (an ellipsis marks the cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _quoted_host(host: str) -> str:
    return repr(bounded(host, HOST_CHARS))


def unwrapped(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The IPv4 address an IPv4-mapped, IPv4-compatible or NAT64 (64:ff9b::/96) IPv6
    address stands for; any other address as it is."""
    if isinstance(address, ipaddress.IPv6Address):
        for wrapper in (_MAPPED, _COMPATIBLE, _NAT64):
            if address in wrapper:
                return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for a public unicast address: outside every special-purpose range, after
    unwrapping an embedded IPv4 address."""
    address = unwrapped(address)
    if isinstance(address, ipaddress.IPv4Address):
        return not any(address in block for block in _SPECIAL_V4)
    if address not in _GLOBAL_UNICAST_V6:
        # ::/8 forms, 64:ff9b:1::/48, 100::/64, fc00::/7, fe80::/10, fec0::/10, ff00::/8
        return False
    return not any(address in block for block in _SPECIAL_V6)


async def lookup(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (the system resolver, off the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def resolve(url: str, *, allow_private: bool) -> tuple[str, str]:
    """The URL's host and an address of it that may be called. Every address the host
    resolves to must be public (one private answer among public ones is refused too)."""
    _, host, port = check_url_shape(url)
    try:
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in await lookup(host, port)]
    except (OSError, ValueError):
        raise UnsafeURLError(f"the webhook host {_quoted_host(host)} does not resolve") from None
    if not addresses:
        raise UnsafeURLError(f"the webhook host {_quoted_host(host)} does not resolve")
    # The message never names the addresses: that would tell a caller what an internal
    # name resolves to.
    if not allow_private and not all(is_public(a) for a in addresses):
        raise UnsafeURLError(
            f"the webhook host {_quoted_host(host)} resolves to a non-public address: "
            "loopback, private, link-local and every other special-purpose address are "
            "refused (set MABAPI_WEBHOOK_ALLOW_PRIVATE=true to allow them)"
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


def _failed(error: str, duration_ms: int) -> Outcome:
    return Outcome(None, bounded(error), duration_ms)


async def _status_of(client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """Send `request`; read at most RESPONSE_BYTES of the answer, raw (a compressed
    answer is never inflated), then drop the connection's rest."""
    response = await client.send(request, stream=True)
    try:
        read = 0
        if response.is_stream_consumed:  # already in memory (a mock transport's answer)
            return response
        async for chunk in response.aiter_raw():
            read += len(chunk)
            if read >= RESPONSE_BYTES:
                break
    finally:
        await response.aclose()
    return response


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
                request = client.build_request(
                    "POST",
                    _pinned(target, address),
                    content=body,
                    headers={**headers, "Host": host_header, "Accept-Encoding": "identity"},
                    extensions={"sni_hostname": host},
                )
                response = await _status_of(client, request)
                if response.is_redirect and "location" in response.headers:
                    target = urljoin(target, response.headers["location"])
                    continue
                return Outcome(response.status_code, None, elapsed())
            return _failed(f"more than {MAX_REDIRECTS} redirects", elapsed())
    except UnsafeURLError as error:
        return _failed(str(error), elapsed())
    except ValueError as error:  # a Location that is no URL at all
        return _failed(f"the receiver's answer was not usable: {error}", elapsed())
    except TimeoutError:
        return _failed(f"timed out after {TIMEOUT_SECONDS:g} s", elapsed())
    except httpx.HTTPError as error:
        return _failed(f"{type(error).__name__}: {error}", elapsed())


def client() -> httpx.AsyncClient:
    """The delivery loop's client: no redirects followed for us, no proxy or netrc from
    the environment, 5-second timeouts."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(TIMEOUT_SECONDS),
        follow_redirects=False,
        trust_env=False,
    )
