"""The lingering close: a refused client reads the server's last words, and a flood of
refused clients that never close holds a bounded number of sockets for a bounded time."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from parallel_recon.net.linger import LingeringCloser


def _pair() -> tuple[socket.socket, socket.socket]:
    """(server side, client side) of a loopback TCP connection."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname()[:2], timeout=30)
        server, _ = listener.accept()
    return server, client


@pytest.fixture
def closer() -> Iterator[LingeringCloser]:
    made = LingeringCloser(linger_s=30.0, most=4)
    yield made
    made.close()


def test_the_client_reads_the_reply_sent_before_its_data(closer: LingeringCloser) -> None:
    server, client = _pair()
    server.sendall(b"why")
    closer.hand_over(server)
    client.sendall(b"x" * (512 << 10))  # none of it read before the hand-over
    client.shutdown(socket.SHUT_WR)
    received = b""
    while chunk := client.recv(4096):
        received += chunk
    assert received == b"why"
    client.close()


def test_the_socket_closes_when_its_client_does(closer: LingeringCloser) -> None:
    server, client = _pair()
    closer.hand_over(server)
    assert closer.lingering == 1
    assert client.recv(16) == b""  # our half-close arrives at once
    client.close()
    assert closer.wait_empty(30), "the closer kept a socket whose client had closed"
    assert server.fileno() == -1


def test_at_most_the_bound_linger_and_the_oldest_goes_first(closer: LingeringCloser) -> None:
    pairs = [_pair() for _ in range(6)]
    for server, _ in pairs:
        closer.hand_over(server)
    assert closer.lingering == 4
    assert [server.fileno() == -1 for server, _ in pairs] == [True, True] + [False] * 4
    for _, client in pairs:
        client.close()


def test_a_silent_client_is_let_go_after_the_linger_time() -> None:
    quick = LingeringCloser(linger_s=0.2, most=4)
    try:
        server, client = _pair()
        quick.hand_over(server)
        client.settimeout(30)
        assert client.recv(16) == b""  # the half-close
        assert quick.lingering == 1
        assert quick.wait_empty(30), "a silent client's socket was never let go"
        assert server.fileno() == -1
        client.close()
    finally:
        quick.close()
