"""The client address the throttles count (chatsite/client_ip.py)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from chatsite.client_ip import client_ip_from
from chatsite.env import env_networks

PROXIES = ("10.0.0.0/8", "192.0.2.1/32")


@pytest.mark.parametrize(
    "remote,forwarded,expected",
    [
        # No trusted peer: X-Forwarded-For is the client's own claim, ignored.
        ("203.0.113.7", "198.51.100.1", "203.0.113.7"),
        # A trusted peer: its right-most untrusted hop.
        ("10.0.0.2", "198.51.100.1", "198.51.100.1"),
        ("10.0.0.2", "1.2.3.4, 198.51.100.1", "198.51.100.1"),
        # Trusted hops (a chain of our proxies) are skipped.
        ("10.0.0.2", "198.51.100.1, 192.0.2.1, 10.9.9.9", "198.51.100.1"),
        # Every hop trusted: the left-most.
        ("10.0.0.2", "10.1.1.1, 10.2.2.2", "10.1.1.1"),
        # A trusted peer without the header: the peer.
        ("10.0.0.2", "", "10.0.0.2"),
        # Garbage where an address should be: stop at the last address believed.
        ("10.0.0.2", "198.51.100.1, not-an-ip", "10.0.0.2"),
        # Ports and brackets, IPv4 mapped into IPv6.
        ("10.0.0.2", "198.51.100.1:5555", "198.51.100.1"),
        ("10.0.0.2", "[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:203.0.113.7", "", "203.0.113.7"),
    ],
)
def test_client_ip_from_believes_only_trusted_proxies(
    remote: str, forwarded: str, expected: str
) -> None:
    assert client_ip_from(remote, forwarded, PROXIES) == expected


def test_client_ip_from_without_a_peer_address_is_none() -> None:
    assert client_ip_from("", "198.51.100.1", PROXIES) is None


def test_env_networks_accepts_addresses_and_networks_normalised() -> None:
    assert env_networks("P", [], environ={"P": "10.0.0.0/8, 192.0.2.1 ,::1"}) == [
        "10.0.0.0/8",
        "192.0.2.1/32",
        "::1/128",
    ]
    assert env_networks("P", [], environ={}) == []


@pytest.mark.parametrize("raw", ["10.0.0.1/8", "proxy.local", "10.0.0.0/33"])
def test_env_networks_refuses_a_bad_entry_naming_the_variable(raw: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=f"CHAT_TRUSTED_PROXIES: '{raw}'"):
        env_networks("CHAT_TRUSTED_PROXIES", [], environ={"CHAT_TRUSTED_PROXIES": raw})


@pytest.mark.parametrize(
    "forwarded,count,expected",
    [
        # One proxy (compose's nginx) appends what it saw: the last entry.
        ("203.0.113.7", 1, "203.0.113.7"),
        ("1.2.3.4, 203.0.113.7", 1, "203.0.113.7"),  # the client's own claim is skipped
        # Behind a TLS proxy too: the second from the right.
        ("1.2.3.4, 203.0.113.7, 10.0.0.9", 2, "203.0.113.7"),
        # Fewer entries than proxies (one was skipped): all are ours, the left-most.
        ("203.0.113.7", 2, "203.0.113.7"),
        # No header or garbage where the client should be: the peer.
        ("", 1, "10.0.0.2"),
        ("1.2.3.4, garbage", 1, "10.0.0.2"),
    ],
)
def test_client_ip_from_with_a_proxy_count_takes_the_nth_address_from_the_right(
    forwarded: str, count: int, expected: str
) -> None:
    assert client_ip_from("10.0.0.2", forwarded, (), count) == expected
