"""Which process holds which socket, read from Linux's /proc: for tests of multi-process nodes.

``/proc/net/{tcp,tcp6,udp,udp6}`` list every socket of this network namespace with
its local and remote address, state and inode; ``/proc/<pid>/fd/*`` link
``socket:[inode]`` to the processes holding it. Together they tell a test which
worker process accepted a connection (from the client's side, a connection is
its two addresses) or listens on a port, without asking the node.

Guarantees and limits:

- addresses come back as ``(host, port)`` with the host in ``ipaddress`` text form;
  IPv4-mapped IPv6 (``::ffff:127.0.0.1``, a dual-stack socket) reads as the IPv4 address;
- only processes this user may inspect are seen (other users' ``fd`` are skipped),
  which covers every process a test starts;
- each call reads /proc afresh: a snapshot, not a subscription (poll it with a deadline);
- Linux only (a test using it should skip elsewhere: see :data:`AVAILABLE`).
"""

from __future__ import annotations

import ipaddress
import os
import struct
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Proto = Literal["tcp", "udp"]
Address = tuple[str, int]
SockName = tuple[str, int] | tuple[str, int, int, int]
"""What ``socket.getsockname()`` returns for IPv4 or IPv6: host and port come first."""

AVAILABLE = Path("/proc/net/tcp").exists()
"""True where this module can work (Linux with /proc mounted)."""

TCP_ESTABLISHED = 0x01
TCP_LISTEN = 0x0A
UDP_UNCONNECTED = 0x07
"""A UDP socket's state in /proc/net/udp when it is not connected (the kernel's TCP_CLOSE)."""


@dataclass(frozen=True)
class SocketEntry:
    """One line of /proc/net/{tcp,tcp6,udp,udp6}."""

    proto: Proto
    local: Address
    remote: Address
    state: int
    """The kernel's TCP state number (TCP_LISTEN, TCP_ESTABLISHED, ...); 7 for unconnected UDP."""
    inode: int
    """Names the socket in /proc/<pid>/fd links (``socket:[inode]``) and in ``os.fstat().st_ino``."""
    tx_queue: int
    rx_queue: int

    @property
    def listening(self) -> bool:
        """TCP: in LISTEN. UDP: bound and not connected, so it receives datagrams from anyone."""
        if self.proto == "tcp":
            return self.state == TCP_LISTEN
        return self.state == UDP_UNCONNECTED and self.remote[1] == 0


def _address(text: str) -> Address:
    """``0100007F:1F90`` (IPv4) or 32 hex digits + port (IPv6), as the kernel prints them."""
    host_hex, port_hex = text.split(":")
    # The kernel prints the address as 32-bit words in host byte order: repack them natively.
    raw = b"".join(struct.pack("=I", int(host_hex[i : i + 8], 16)) for i in range(0, len(host_hex), 8))
    address = ipaddress.ip_address(raw)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address), int(port_hex, 16)


def sockets(proto: Proto) -> list[SocketEntry]:
    """Every ``proto`` socket of this network namespace, IPv4 and IPv6, as the kernel lists them now."""
    entries = []
    for suffix in ("", "6"):
        table = Path(f"/proc/net/{proto}{suffix}")
        try:
            lines = table.read_text().splitlines()[1:]
        except FileNotFoundError:  # no IPv6 in this kernel
            continue
        for line in lines:
            fields = line.split()
            tx_queue, rx_queue = fields[4].split(":")
            entries.append(
                SocketEntry(
                    proto,
                    _address(fields[1]),
                    _address(fields[2]),
                    int(fields[3], 16),
                    int(fields[9]),
                    int(tx_queue, 16),
                    int(rx_queue, 16),
                )
            )
    return entries


def all_pids() -> list[int]:
    """Every process id in /proc now."""
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets ``pid`` holds open now; empty when it is gone or not ours to inspect."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except (FileNotFoundError, PermissionError, ProcessLookupError):
        return set()
    for fd in fds:
        try:
            link = os.readlink(f"{fd_dir}/{fd}")
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue  # closed meanwhile
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    return inodes


def holders(inodes: Collection[int], pids: Iterable[int] | None = None) -> dict[int, set[int]]:
    """For each of ``inodes`` held by any of ``pids`` (default: every process), the pids holding it.

    An inode no process holds (closed, or held by a process not inspected) is absent.
    A socket is held by several processes when they inherited or passed its descriptor.
    """
    wanted = set(inodes)
    found: dict[int, set[int]] = {}
    for pid in all_pids() if pids is None else pids:
        for inode in socket_inodes(pid) & wanted:
            found.setdefault(inode, set()).add(pid)
    return found


def find(proto: Proto, local: SockName, remote: SockName) -> SocketEntry | None:
    """The socket whose local and remote addresses are exactly these, or None.

    For a connection seen from its client, the server's end has ``local`` = the address
    the client connected to and ``remote`` = the client's own ``getsockname()``.
    """
    local, remote = _normal(local), _normal(remote)
    for entry in sockets(proto):
        if entry.local == local and entry.remote == remote:
            return entry
    return None


def connection_owner(server: SockName, client: SockName, pids: Iterable[int] | None = None) -> int | None:
    """The one process holding the server end of the TCP connection ``client`` -> ``server``.

    ``client`` is the client socket's ``getsockname()``, ``server`` the address it
    connected to. None when no inspected process holds it (not accepted yet, or
    closed); an AssertionError when several do (a shared descriptor: ambiguous).
    """
    entry = find("tcp", server, client)
    if entry is None:
        return None
    owners = holders([entry.inode], pids).get(entry.inode, set())
    assert len(owners) <= 1, f"connection {client} -> {server} is held by several processes: {owners}"
    return next(iter(owners), None)


def listeners(
    port: int, proto: Proto = "tcp", pids: Iterable[int] | None = None, host: str | None = None
) -> dict[int, set[int]]:
    """Processes listening on ``port`` (TCP LISTEN, or unconnected UDP): pid -> inodes of those sockets.

    Any local address unless ``host`` is given. Only ``pids`` are inspected (default:
    every process). With SO_REUSEPORT each worker has a socket (inode) of its own.
    """
    inodes = {
        entry.inode
        for entry in sockets(proto)
        if entry.listening
        and entry.local[1] == port
        and (host is None or entry.local[0] == _normal((host, 0))[0])
    }
    by_pid: dict[int, set[int]] = {}
    for inode, owners in holders(inodes, pids).items():
        for pid in owners:
            by_pid.setdefault(pid, set()).add(inode)
    return by_pid


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` now (from each /proc/<n>/stat), in pid order."""
    found = []
    for candidate in all_pids():
        try:
            stat = Path(f"/proc/{candidate}/stat").read_text()
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(candidate)
    return sorted(found)


def cmdline(pid: int) -> list[str]:
    """The argument vector ``pid`` runs with; empty when it is gone (or a kernel thread)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, PermissionError, ProcessLookupError):
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0")[:-1]]


def _normal(address: SockName) -> Address:
    """``address`` with its host in the form :func:`sockets` reports (IPv4-mapped read as IPv4)."""
    host, port = address[0], address[1]
    ip = ipaddress.ip_address(host.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), port
