"""Everything specific to daphne: its sockets, written to through Twisted and autobahn.

Under daphne (the project's web server) a room frame is framed once, by autobahn's
``PreparedMessage`` (its API for broadcasting), and its bytes go to each socket's
transport: all of a batch's frames for one socket in one write, straight to the
kernel when Twisted has nothing queued for it (``write_now``). That saves, per
socket and frame, an ASGI message through daphne, autobahn's framing of the same
text again, and two ``epoll_ctl`` calls (docs/benchmarks.md has the figures).

It reads private attributes: the ``functools.partial`` daphne passes as ``send``
(daphne/server.py), autobahn's ``_perMessageCompress`` and ``send_queue``, and
Twisted's ``dataBuffer``/``offset``/``_tempDataLen``. So:
- ``CHAT_DAPHNE_FAST_PATH`` turns it on (the default) or off;
- ``check()`` runs at start-up (chatsite/asgi.py) and turns it off, with a warning,
  when an internal it needs is missing; a socket whose objects lack one is written
  through the ASGI ``send`` instead (``writer_for``);
- pyproject.toml bounds daphne, autobahn and Twisted to the versions tested;
- tests/integration/test_streaming.py streams with it on and off.

The bytes queued in Twisted for a socket are read here too (``queued_bytes``):
with or without the fast path, that is where a slow socket's frames pile up under
daphne, and ``CHAT_SOCKET_BUFFER_BYTES`` bounds it (members.py).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from messages_app.realtime.frames import Frame

logger = logging.getLogger(__name__)

# What check() found: None until it ran.
_state: dict[str, bool | None] = {"enabled": None, "probe": None}


def _internals() -> str | None:
    """Why the fast path cannot run here, or None when everything it needs is there."""
    try:
        from autobahn.websocket.protocol import WebSocketServerFactory
        from daphne.server import Server
        from daphne.ws_protocol import WebSocketProtocol
        from twisted.internet.abstract import FileDescriptor
        from twisted.internet.tcp import Connection
    except ImportError as error:
        return f"cannot import {error.name}"
    needs = [
        (WebSocketProtocol, "sendPreparedMessage"),
        (WebSocketProtocol, "STATE_OPEN"),
        (WebSocketServerFactory, "prepareMessage"),
        (Server, "handle_reply"),
        (FileDescriptor, "dataBuffer"),
        (Connection, "write"),
    ]
    for owner, name in needs:
        if not hasattr(owner, name):
            return f"{owner.__module__}.{owner.__name__}.{name} is missing"
    return None


def check(*, enabled: bool) -> bool:
    """At start-up: whether the fast path runs (``enabled`` and the internals are there)."""
    missing = _internals()
    if missing is not None:
        if enabled:
            logger.warning(
                "CHAT_DAPHNE_FAST_PATH is on but turns itself off: %s "
                "(frames go through the ASGI send; see messages_app/realtime/daphne.py)",
                missing,
            )
        _state.update(enabled=False, probe=False)
        return False
    _state.update(enabled=enabled, probe=True)
    logger.info("daphne fast path: %s", "on" if enabled else "off (CHAT_DAPHNE_FAST_PATH)")
    return enabled


def _checked() -> None:
    if _state["enabled"] is None:
        from django.conf import settings

        check(enabled=settings.CHAT_DAPHNE_FAST_PATH)


def protocol_of(send: Callable[..., Any]) -> Any:
    """The autobahn protocol behind daphne's ASGI ``send``, or None (another server, a test).

    daphne passes ``functools.partial(server.handle_reply, protocol)`` as ``send``.
    """
    _checked()
    if not _state["probe"]:
        return None
    from daphne.ws_protocol import WebSocketProtocol

    if (
        isinstance(send, functools.partial)
        and send.args
        and isinstance(send.args[0], WebSocketProtocol)
    ):
        return send.args[0]
    return None


def queued_bytes(protocol: Any) -> int:
    """Bytes Twisted holds for this socket that the kernel has not taken yet."""
    transport = protocol.transport
    if transport is None:
        return 0
    buffered = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
    return buffered + getattr(transport, "_tempDataLen", 0)


def _instance_ready(protocol: Any) -> bool:
    transport = protocol.transport
    return (
        hasattr(protocol, "_perMessageCompress")
        and hasattr(protocol, "send_queue")
        and hasattr(protocol, "factory")
        and transport is not None
        and hasattr(transport, "_tempDataLen")
        and hasattr(transport, "offset")
    )


def _plain_tcp(transport: Any) -> bool:
    """Whether ``write_now`` may write to this Twisted transport's socket itself."""
    from twisted.internet.tcp import Connection

    return (
        isinstance(transport, Connection)
        and not getattr(transport, "TLS", True)
        and hasattr(transport, "socket")
    )


def write_now(transport: Any, data: bytes) -> None:
    """Write ``data`` on a plain TCP Twisted transport, now when nothing is queued.

    Twisted's ``write`` appends to its buffer and registers the socket for
    writability, and on the next loop turn sends and unregisters it. With its
    buffer empty, the ``send`` it would make next is made here; whatever the
    socket does not take (or any error, which Twisted then handles and reports as
    usual) goes to ``transport.write`` behind it, so the byte order is Twisted's.
    """
    if (
        transport.dataBuffer
        or transport._tempDataLen
        or not transport.connected
        or transport.disconnecting
    ):
        transport.write(data)
        return
    try:
        sent = transport.socket.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError:
        transport.write(data)
        return
    if sent < len(data):
        transport.write(data[sent:])


class DaphneWriter:
    """Writes a member's frames to its daphne socket (see the module docstring)."""

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.direct = False

    def start(self) -> None:
        self.direct = _plain_tcp(self.protocol.transport)

    def stop(self) -> None:
        pass

    def queued_bytes(self) -> int:
        return queued_bytes(self.protocol)

    def write(self, frames: list[Frame]) -> None:
        protocol = self.protocol
        if protocol.state != protocol.STATE_OPEN:
            return  # closing: the consumer's disconnect removes this member
        factory = protocol.factory
        if not self.direct or protocol._perMessageCompress is not None or protocol.send_queue:
            # compression negotiated, or autobahn has queued sends of its own
            for frame in frames:
                protocol.sendPreparedMessage(_prepared(frame, factory))
            return
        data = b"".join(_prepared(frame, factory).payloadHybi for frame in frames)
        write_now(protocol.transport, data)


def _prepared(frame: Frame, factory: Any) -> Any:
    """The frame as autobahn's ``PreparedMessage``: framed once for every socket."""
    prepared = frame.cache.get("autobahn")
    if prepared is None:
        prepared = frame.cache["autobahn"] = factory.prepareMessage(frame.payload)
    return prepared


def fast_writer(send: Callable[..., Any]) -> DaphneWriter | None:
    """A fast-path writer for this socket, or None (off, not daphne, internals missing)."""
    protocol = protocol_of(send)
    if protocol is None or not _state["enabled"]:
        return None
    if not _instance_ready(protocol):
        logger.warning("daphne fast path: a socket lacks an internal it needs; using ASGI send")
        return None
    return DaphneWriter(protocol)


def queue_probe(send: Callable[..., Any]) -> Callable[[], int] | None:
    """How many bytes daphne holds for this socket, when it can be read (else None)."""
    protocol = protocol_of(send)
    if protocol is None or protocol.transport is None:
        return None
    if not hasattr(protocol.transport, "_tempDataLen"):
        return None
    return lambda: queued_bytes(protocol)
