"""daphne.write_now: straight to the socket only when Twisted has nothing queued."""

from __future__ import annotations

import pytest

from messages_app.realtime import daphne


class FakeSocket:
    def __init__(self, takes: int | None, error: type[OSError] | None = None) -> None:
        self.takes, self.error, self.sent = takes, error, b""

    def send(self, data: bytes) -> int:
        if self.error is not None:
            raise self.error
        n = len(data) if self.takes is None else min(self.takes, len(data))
        self.sent += data[:n]
        return n


class FakeTransport:
    """The attributes of a Twisted TCP transport that write_now and queued_bytes read."""

    def __init__(self, sock: FakeSocket, buffered: bytes = b"") -> None:
        self.socket, self.dataBuffer, self._tempDataLen, self.offset = sock, buffered, 0, 0
        self.connected, self.disconnecting = True, False
        self.queued = b""

    def write(self, data: bytes) -> None:
        self.queued += data


@pytest.mark.parametrize(
    ("takes", "error", "buffered", "sent", "queued"),
    [
        (None, None, b"", b"frame", b""),  # nothing queued: straight to the socket
        (2, None, b"", b"fr", b"ame"),  # the socket takes part: the rest queues behind
        (None, BlockingIOError, b"", b"", b"frame"),  # full socket: Twisted writes it later
        (None, ConnectionResetError, b"", b"", b"frame"),  # Twisted sees the error itself
        (None, None, b"older", b"", b"frame"),  # Twisted has bytes queued: keep the order
    ],
)
def test_write_now_sends_at_once_only_when_nothing_is_queued(
    takes: int | None, error: type[OSError] | None, buffered: bytes, sent: bytes, queued: bytes
) -> None:
    transport = FakeTransport(FakeSocket(takes, error), buffered)
    daphne.write_now(transport, b"frame")
    assert (transport.socket.sent, transport.queued) == (sent, queued)


def test_queued_bytes_counts_what_twisted_holds_for_the_socket() -> None:
    transport = FakeTransport(FakeSocket(None), b"0123456789")
    transport.offset, transport._tempDataLen = 4, 100

    class Protocol:
        pass

    protocol = Protocol()
    protocol.transport = transport  # type: ignore[attr-defined]
    assert daphne.queued_bytes(protocol) == 6 + 100
