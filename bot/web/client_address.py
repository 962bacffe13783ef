"""The client's address, seen through the reverse proxies the operator trusts.

``X-Forwarded-For`` is believed only when the TCP peer is in ``TRUSTED_PROXIES``:
anyone can send the header, so from any other peer it would let a client pick
the address the throttle and the audit trail see.
"""

from __future__ import annotations

import ipaddress

from aiohttp import web

from bot.appkeys import SETTINGS

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_LENGTH = 64


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None, proxies: tuple[Network, ...]
) -> bool:
    return address is not None and any(address in net for net in proxies)


def is_trusted_proxy(request: web.Request) -> bool:
    """The TCP peer is one of the operator's reverse proxies."""
    return _trusted(_address(request.remote or ""), request.app[SETTINGS].trusted_proxies)


def client_address(request: web.Request) -> str:
    """The peer, or, behind trusted proxies, the nearest hop in ``X-Forwarded-For`` that is
    not itself a trusted proxy (hops to its left were written by the client and prove
    nothing)."""
    peer = request.remote or ""
    proxies = request.app[SETTINGS].trusted_proxies
    if not _trusted(_address(peer), proxies):
        return peer[:MAX_LENGTH]
    hops = [
        hop.strip()
        for header in request.headers.getall("X-Forwarded-For", ())
        for hop in header.split(",")
        if hop.strip()
    ]
    nearest = peer
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # a malformed hop: keep the last address a trusted proxy vouched for
        nearest = str(address)
        if not _trusted(address, proxies):
            break
    return nearest[:MAX_LENGTH]
