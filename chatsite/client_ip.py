"""The address a request came from, for throttling (django-axes, django-ratelimit).

``REMOTE_ADDR`` is the peer of the web process. Only when that peer is one of
``CHAT_TRUSTED_PROXIES`` is ``X-Forwarded-For`` believed, and then only as far
as the proxies we trust wrote it: it is read from the right (each proxy appends
the address it saw), trusted hops are skipped, and the first untrusted hop is
the client. Anything to its left was written by the client and is ignored, so
a client cannot pick the address it is throttled under.

Where the proxies' addresses are not known in advance (containers),
``CHAT_TRUSTED_PROXY_COUNT`` = N says instead that every request passes through
exactly N proxies of ours, each appending the address it saw: the client is the
N-th address from the right. (docker-compose.yml: 1, its nginx.) Fewer entries
than N means the request skipped a proxy; all of them were then written by ours,
and the left-most is the client.
"""

from __future__ import annotations

import functools
import ipaddress

from django.conf import settings
from django.http import HttpRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.cache
def _networks(trusted: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    # The settings hold validated strings (chatsite.env.env_networks).
    return tuple(ipaddress.ip_network(item) for item in trusted)


def _address(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [2001:db8::1]:443
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # 203.0.113.9:5555
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # An IPv4 client seen through an IPv6 socket (::ffff:203.0.113.9) is that IPv4 client.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def client_ip_from(
    remote_addr: str, forwarded_for: str, trusted: tuple[str, ...], proxy_count: int = 0
) -> str | None:
    """The client's address from the peer's address and ``X-Forwarded-For`` (pure).

    None without a usable peer address (a request made in-process, as by tests).
    """
    peer = _address(remote_addr)
    if proxy_count:
        hops = [hop for hop in forwarded_for.split(",") if hop.strip()]
        if hops:
            client = _address(hops[-proxy_count] if len(hops) >= proxy_count else hops[0])
            if client is not None:
                return str(client)
    if peer is None:
        return None
    networks = _networks(trusted)
    if not networks or not _trusted(peer, networks) or not forwarded_for:
        return str(peer)
    client = peer
    for hop in reversed(forwarded_for.split(",")):
        address = _address(hop)
        if address is None:
            # A hop no trusted proxy would write: stop at the last address we believe.
            break
        client = address
        if not _trusted(address, networks):
            break
    return str(client)


def client_ip(request: HttpRequest | None) -> str | None:
    """The client's address of a request (``AXES_CLIENT_IP_CALLABLE``)."""
    if request is None:
        return None
    return client_ip_from(
        request.META.get("REMOTE_ADDR", ""),
        request.META.get("HTTP_X_FORWARDED_FOR", ""),
        tuple(settings.CHAT_TRUSTED_PROXIES),
        settings.CHAT_TRUSTED_PROXY_COUNT,
    )


def client_ip_key(group: str, request: HttpRequest) -> str:
    """The same address as a django-ratelimit key (``key=`` takes a callable)."""
    return client_ip(request) or "unknown"
