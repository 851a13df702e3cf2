"""The /proc socket helpers find sockets this test opens itself, under the right process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support import procnet

pytestmark = pytest.mark.skipif(not procnet.AVAILABLE, reason="needs Linux /proc/net")

ME = os.getpid()


def inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def test_a_listening_tcp_socket_is_found_under_this_process() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert procnet.listeners(port, pids=[ME]) == {ME: {inode(listener)}}
        assert procnet.listeners(port) == {ME: {inode(listener)}}, "scanning every process finds only us"
        assert procnet.listeners(port, host="127.0.0.1", pids=[ME]) == {ME: {inode(listener)}}
        assert procnet.listeners(port, host="127.0.0.2", pids=[ME]) == {}
        assert procnet.listeners(port, "udp", pids=[ME]) == {}
    assert procnet.listeners(port, pids=[ME]) == {}, "a closed socket is gone"


def test_a_bound_but_not_listening_tcp_socket_is_no_listener() -> None:
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        assert procnet.listeners(bound.getsockname()[1], pids=[ME]) == {}


def test_ipv6_and_dual_stack_addresses() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    with socket.socket(socket.AF_INET6) as listener:
        try:
            listener.bind(("::1", 0))
        except OSError:
            pytest.skip("no ::1")
        listener.listen()
        port = listener.getsockname()[1]
        assert procnet.listeners(port, pids=[ME], host="::1") == {ME: {inode(listener)}}
        with socket.create_connection(("::1", port)) as client:
            accepted, _ = listener.accept()
            with accepted:
                owner = procnet.connection_owner(("::1", port), client.getsockname())
                assert owner == ME
                entry = procnet.find("tcp", ("::1", port), client.getsockname())
                assert entry is not None and entry.inode == inode(accepted)
    with socket.socket(socket.AF_INET6) as dual:
        dual.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        dual.bind(("::", 0))
        dual.listen()
        port = dual.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = dual.accept()
            with accepted:
                # The server end is an IPv6 socket with IPv4-mapped addresses: it reads as IPv4.
                entry = procnet.find("tcp", ("127.0.0.1", port), client.getsockname())
                assert entry is not None and entry.inode == inode(accepted)
                assert entry.local == ("127.0.0.1", port)


def test_the_server_end_of_a_connection_is_told_from_the_client_end() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        server = listener.getsockname()
        with socket.create_connection(server) as client:
            accepted, _ = listener.accept()
            with accepted:
                entry = procnet.find("tcp", server, client.getsockname())
                assert entry is not None
                assert entry.inode == inode(accepted) != inode(client)
                assert entry.state == procnet.TCP_ESTABLISHED
                assert procnet.connection_owner(server, client.getsockname()) == ME
                back = procnet.find("tcp", client.getsockname(), server)
                assert back is not None and back.inode == inode(client)


def test_udp_bound_sockets_listen_and_connected_ones_do_not() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bound:
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        assert procnet.listeners(port, "udp", pids=[ME]) == {ME: {inode(bound)}}
        assert procnet.listeners(port, "tcp", pids=[ME]) == {}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as connected:
            connected.connect(("127.0.0.1", port))
            entry = procnet.find("udp", connected.getsockname(), ("127.0.0.1", port))
            assert entry is not None and entry.inode == inode(connected) and not entry.listening
            assert procnet.listeners(connected.getsockname()[1], "udp", pids=[ME]) == {}


@pytest.fixture
def child_listener() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Another process (a child of this one) listening on a TCP port: (process, port)."""
    code = (
        "import socket, sys\n"
        "t = socket.socket(); t.bind(('127.0.0.1', 0)); t.listen()\n"
        "print(t.getsockname()[1], flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "procnet-test-marker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        yield proc, int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()


def test_a_socket_of_another_process_is_found_under_that_process(
    child_listener: tuple[subprocess.Popen[str], int],
) -> None:
    proc, port = child_listener
    assert set(procnet.listeners(port)) == {proc.pid}
    assert procnet.listeners(port, pids=[ME]) == {}
    with socket.create_connection(("127.0.0.1", port)) as client:
        # Not accepted yet: the server end exists in the kernel but no process holds it.
        assert procnet.connection_owner(("127.0.0.1", port), client.getsockname()) is None
    assert proc.pid in procnet.children(ME)
    assert procnet.cmdline(proc.pid)[-1] == "procnet-test-marker"
    assert procnet.cmdline(-1) == [] and procnet.socket_inodes(-1) == set()
