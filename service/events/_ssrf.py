"""Where webhooks may send: public addresses only, checked twice.

A webhook URL names a host the service will connect to on a caller's behalf, so the
service must not become a way into its own network (server-side request forgery).
The host is checked when the webhook is created or changed (every address it
resolves to must be allowed) and again at connect time, on the address actually
connected to (``AddressPolicy.socket_factory``): a name that resolves to a public
address when checked and to a private one later (DNS rebinding) is still refused.

Refused: loopback, private, link-local, shared (CGNAT), unspecified, reserved and
documentation ranges (every address that is not globally routable), unless the
operator allows private delivery; multicast and the cloud metadata addresses always.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import SplitResult, urlsplit

from service.events._errors import InvalidWebhookUrlError, WebhookUrlForbiddenError

MAX_URL_LENGTH: Final = 2048
RESOLVE_TIMEOUT: Final = 2.0
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Instance metadata services (AWS, GCP, Azure, OpenStack: 169.254.169.254; AWS IPv6;
# Alibaba): credentials live there.
METADATA_ADDRESSES: Final = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)

Resolve = Callable[[str, int], Awaitable[Sequence[str]]]
"""(host, port) -> the addresses it resolves to."""


class ForbiddenAddressError(OSError):
    """A connection to an address the policy refuses (raised at connect time)."""


def forbidden_reason(address: IpAddress, *, allow_private: bool) -> str | None:
    """Why the service must not connect to ``address``; None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_global or allow_private:
        return None
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private:
        return "a private address"
    return "not a globally routable address"


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses of ``host`` from the system resolver."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True, kw_only=True)
class AddressPolicy:
    """The operator's rule: ``allow_private`` lets webhooks reach private networks (and
    plain http), for tests and private deployments."""

    allow_private: bool = False

    def check_address(self, address: str, *, host: str) -> None:
        """Raise :class:`WebhookUrlForbiddenError` when ``address`` is refused."""
        reason = forbidden_reason(ipaddress.ip_address(address), allow_private=self.allow_private)
        if reason is not None:
            shown = host if host == address else f"{host} ({address})"
            raise WebhookUrlForbiddenError(
                f"webhook URL host {shown} is {reason}: the service does not call it",
                field="webhook.url",
                metadata={"host": host[:253], "address": address},
            )

    async def check_url(self, url: str, *, resolve: Resolve = system_resolve) -> str:
        """Validate a webhook URL and the addresses its host resolves to now.

        Returns:
            The URL as given.

        Raises:
            InvalidWebhookUrlError: Not an absolute http(s) URL of an acceptable form,
                or its host does not resolve.
            WebhookUrlForbiddenError: A forbidden address, or http while private
                delivery is not allowed.
        """
        parts = _parse(url)
        if parts.scheme != "https" and not self.allow_private:
            raise WebhookUrlForbiddenError(
                "webhook URLs must use https", field="webhook.url", metadata={"scheme": "http"}
            )
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = [str(ipaddress.ip_address(host))]
        except ValueError:
            try:
                async with asyncio.timeout(RESOLVE_TIMEOUT):
                    addresses = list(await resolve(host, port))
            except (OSError, TimeoutError, UnicodeError):
                addresses = []
            if not addresses:
                raise InvalidWebhookUrlError(
                    f"webhook URL host {host[:253]} does not resolve",
                    field="webhook.url",
                    metadata={"host": host[:253]},
                ) from None
        for address in addresses:
            self.check_address(address.split("%")[0], host=host)
        return url

    def socket_factory(self, addr_info: Any) -> socket.socket:
        """aiohttp's ``socket_factory``: refuse a forbidden address right before the
        connection is made (after any DNS answer)."""
        family, kind, proto, _, sockaddr = addr_info
        address = str(sockaddr[0]).split("%")[0]
        reason = forbidden_reason(ipaddress.ip_address(address), allow_private=self.allow_private)
        if reason is not None:
            raise ForbiddenAddressError(f"refused to connect to {address}: {reason}")
        sock = socket.socket(family=family, type=kind, proto=proto)
        sock.setblocking(False)
        return sock


def _parse(url: str) -> SplitResult:
    def invalid(why: str) -> InvalidWebhookUrlError:
        return InvalidWebhookUrlError(f"webhook URL {why}", field="webhook.url")

    if not url:
        raise invalid("is required")
    if len(url) > MAX_URL_LENGTH:
        raise invalid(f"is longer than {MAX_URL_LENGTH} characters")
    if not url.isascii() or not url.isprintable() or " " in url:
        raise invalid("must be ASCII without spaces or control characters (punycode the host)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise invalid("is malformed") from None
    if parts.scheme not in ("https", "http"):
        raise invalid("must start with https://")
    if not parts.hostname:
        raise invalid("has no host")
    if parts.username is not None or parts.password is not None:
        raise invalid("must not carry user:password@ (it would be stored and logged)")
    if port == 0:
        raise invalid("has port 0")
    return parts
