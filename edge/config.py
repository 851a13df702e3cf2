"""Typed configuration: TOML file, then ``EDGE_*`` environment variables, then flags.

Every setting is a field of :class:`Config` with its default and a one-line
help text; the CLI, the env reader and the TOML loader all derive from that
one table, so a setting cannot exist in one place and not the others.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A setting has a value the node cannot run with."""


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
          "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}  # fmt: skip


def parse_size(value: str | int) -> int:
    """``"512MiB"`` → 536870912; plain integers are bytes."""
    if isinstance(value, int):
        return value
    m = _SIZE.match(value)
    if not m:
        raise ConfigError(f"not a size: {value!r} (use e.g. 512MiB, 2GiB, 65536)")
    unit = (m.group(2) or "").lower().rstrip("b")
    return int(float(m.group(1)) * _UNITS[unit])


def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"``, ``"[::1]:8080"`` or ``":8080"`` → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"listen address must be HOST:PORT, got {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


DEFAULT_STRIPPED_FIELDS = (
    "x-forwarded-host",
    "x-host",
    "x-forwarded-server",
    "x-original-host",
    "x-original-url",
    "x-rewrite-url",
    "x-forwarded-prefix",
    "x-forwarded-scheme",
    "x-forwarded-port",
    "x-forwarded-ssl",
    "front-end-https",
    "x-url-scheme",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
)
"""Request fields origins and frameworks commonly read as the host, URL, scheme, port,
method or client of a request, which the cache key does not hold (``strip_request_fields``)."""

NODE_SET_FIELDS = frozenset(
    {"host", "x-forwarded-for", "x-forwarded-proto", "via", "cdn-loop", "edge-internal", "content-length"}
)
"""Request fields the node itself sets or frames: neither stripped nor forwarded by a setting."""

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)
_FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HOST_NAME = re.compile(r"(?:\*\.)?[a-z0-9_-]+(?:\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\]")


def parse_field_names(value: str, setting: str) -> tuple[str, ...]:
    """``"X-Forwarded-Host, forwarded"`` → ("x-forwarded-host", "forwarded"): lower-cased field
    names, for ``strip_request_fields`` and ``forward_request_fields``."""
    names: list[str] = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        name = item.lower()
        if not _FIELD_NAME.fullmatch(name):
            raise ConfigError(f"{setting}: {item!r} is not a field name")
        if name in NODE_SET_FIELDS or name in _HOP_BY_HOP:
            raise ConfigError(
                f"{setting}: {item} is set by the node itself (or hop-by-hop), not by this setting"
            )
        if name not in names:
            names.append(name)
    return tuple(names)


def parse_hosts(value: str) -> tuple[str, ...]:
    """``"Example.com, *.example.com, ::1"`` → ("example.com", "*.example.com", "[::1]"): the
    ``hosts`` allow-list, lower-cased, without a trailing dot; an IPv6 address in brackets."""
    hosts: list[str] = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        host = item.lower().rstrip(".")
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        if not _HOST_NAME.fullmatch(host) or (host.startswith("[") and not _is_ipv6(host[1:-1])):
            raise ConfigError(
                f"hosts: {item!r} is not a host name, *.domain or IP address (no port, no scheme)"
            )
        if host not in hosts:
            hosts.append(host)
    return tuple(hosts)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


LOG_LEVELS = ("debug", "info", "warning", "error")

RELOADABLE = frozenset(
    {
        "upstream", "shields", "shield_fallback", "shield_fail_threshold", "shield_probe_min",
        "shield_probe_max", "upstream_host", "connect_timeout", "read_timeout", "default_ttl",
        "log_level", "cert", "key",
    }
)  # fmt: skip
"""Settings a running node takes from its re-read configuration on SIGHUP; any other
changed setting is reported and waits for a restart."""


def _opt(default: Any, help: str, kind: str = "str", repeat: str = "") -> Any:
    """``repeat``: the flag may be given several times (and the TOML value be a list); the
    values are joined with this separator into the one string the setting holds."""
    return field(default=default, metadata={"help": help, "kind": kind, "repeat": repeat})


@dataclass
class Config:
    """All settings of one edge node."""

    upstream: str = _opt("", "URL of the origin (or the one shield) that misses are fetched from")
    shields: str = _opt(
        "",
        "shield nodes tried before the upstream, URL[;weight=N],...: each key goes to one shield "
        "chosen by rendezvous hashing",
    )
    shield_fallback: str = _opt(
        "origin", "with no healthy shield: origin (go to the upstream) or error (502, or stale where allowed)"
    )
    shield_fail_threshold: int = _opt(3, "consecutive failures that mark a shield down", "int")
    shield_probe_min: float = _opt(
        1.0, "seconds before a down shield is probed (doubling up to shield_probe_max)", "float"
    )
    shield_probe_max: float = _opt(30.0, "longest wait between probes of a down shield", "float")
    shutdown_grace: float = _opt(
        10.0, "seconds in-flight responses may take to finish after SIGTERM before the node exits", "float"
    )
    access_log: str = _opt(
        "-",
        "where the access log goes, one JSON line per request: - (stdout), a file path "
        "(appended to; reopened on SIGHUP), or off",
    )
    log_level: str = _opt("warning", "level of the node's own log on stderr: debug, info, warning or error")
    max_client_connections: int = _opt(
        1024,
        "open TCP connections one client address may hold per worker; more are refused; 0: no cap",
        "int",
    )
    rate_limit: float = _opt(
        0.0, "requests per second one client address may make per worker (429 beyond); 0: no limit", "float"
    )
    rate_burst: int = _opt(0, "requests a client may make at once above rate_limit; 0: twice the rate", "int")
    max_tunnels: int = _opt(1024, "WebSocket tunnels open at once per worker (503 beyond); 0: no cap", "int")
    max_client_tunnels: int = _opt(
        64, "WebSocket tunnels one client address may hold per worker (503 beyond); 0: no cap", "int"
    )
    tunnel_idle_timeout: float = _opt(
        300.0, "seconds a WebSocket tunnel may carry nothing either way before it is closed", "float"
    )
    trusted_proxies: str = _opt(
        "",
        "CIDRs of peers whose X-Forwarded-Proto sets the request's scheme (a shield lists its edges' "
        "networks; a node behind a TLS load balancer lists it); empty trusts nobody",
    )
    strip_request_fields: str = _opt(
        ",".join(DEFAULT_STRIPPED_FIELDS),
        "request fields never sent upstream, comma-separated: an origin that reflects one (a host, URL, "
        "scheme, port or method override) would have its answer cached for every client (cache poisoning); "
        "a field left out of this list goes upstream unkeyed, so forward one with forward_request_fields",
    )
    forward_request_fields: str = _opt(
        "",
        "request fields sent upstream and made part of the cache key, comma-separated (responses vary on "
        "them, as if the origin had listed them in Vary): forwards a field of strip_request_fields safely",
    )
    hosts: str = _opt(
        "",
        "Host / :authority names this node serves, comma-separated: example.com, *.example.com (any "
        "subdomain), an IP address; others get 421 Misdirected Request; empty serves any host",
    )
    node_id: str = _opt("", "this node's id in CDN-Loop, for loop detection; empty: random at start")
    listen: str = _opt("127.0.0.1:8080", "HOST:PORT of the public cleartext HTTP/1.1 listener")
    cache_size: int = _opt(512 * 1024**2, "memory for cached objects, per worker (e.g. 512MiB)", "size")
    eviction: str = _opt(
        "s3fifo",
        "what the full cache evicts: lru (least recently used) or s3fifo (S3-FIFO: new objects wait in "
        "a small FIFO, so one-hit wonders and scans leave before objects hit twice)",
    )
    disk_cache: str = _opt(
        "",
        "directory of the disk tier below the memory cache (objects evicted from memory, kept across "
        "restarts; shared by the node's workers); empty: memory only",
    )
    disk_size: int = _opt(50 * 1024**3, "bytes the disk tier may hold in disk_cache (e.g. 50GiB)", "size")
    name: str = _opt("edge", "this node's name in Cache-Status and Via")
    workers: int = _opt(
        1,
        "worker processes serving every port (SO_REUSEPORT) as one cache: each keeps its own "
        "cache_size of memory, asks the key's owning worker on a miss, and the admin API covers all",
        "int",
    )
    connect_timeout: float = _opt(5.0, "seconds to connect to the upstream", "float")
    read_timeout: float = _opt(30.0, "seconds to wait for upstream bytes before 504", "float")
    max_object_size: int = _opt(64 * 1024**2, "largest response stored in the cache", "size")
    slice_size: int = _opt(
        1024**2, "objects larger than this are cached as slices fetched with Range", "size"
    )
    max_request_body: int = _opt(16 * 1024**2, "largest request body accepted (413 beyond)", "size")
    max_request_line: int = _opt(8192, "longest request target (414 beyond)", "size")
    max_header_bytes: int = _opt(32768, "largest request header block (431 beyond)", "size")
    max_header_count: int = _opt(100, "most request header fields (431 beyond)", "int")
    pass_ttl: float = _opt(120.0, "seconds a key known to be uncacheable skips collapsing", "float")
    upstream_host: str = _opt("", "Host sent upstream; empty keeps the client's Host")
    stale_grace: float = _opt(
        0.0, "seconds past expiry a stale object may be served while the upstream fails", "float"
    )
    default_ttl: str = _opt("", "GLOB=SECONDS,... TTL for responses without explicit freshness, by path")
    compress_codings: str = _opt("br,zstd,gzip", "codings the node compresses into, in order of preference")
    compress_min_size: int = _opt(1024, "smallest body worth compressing", "size")
    brotli_level: int = _opt(9, "brotli quality for cached variants (0-11)", "int")
    zstd_level: int = _opt(19, "zstd level for cached variants (1-22)", "int")
    gzip_level: int = _opt(9, "gzip level for cached variants (1-9)", "int")
    alt_svc: str = _opt("", 'Alt-Svc value sent on TCP responses, e.g. h3=":8443"; ma=86400')
    admin_listen: str = _opt(
        "127.0.0.1:9090", "HOST:PORT of the admin API (purge, stats, metrics); empty disables it"
    )
    admin_token: str = _opt(
        "", "bearer token the admin API requires for /purge, /stats and /metrics; empty refuses them all"
    )
    purge_peers: str = _opt(
        "",
        "admin API URLs (this node's shields) a purge is passed to before this node purges, "
        "comma-separated, called with admin_token",
    )
    # -- HTTPS (HTTP/2 + HTTP/1.1 over TLS) and HTTP/3 (QUIC); both need a certificate --
    tls_listen: str = _opt(
        "127.0.0.1:8443",
        "HOST:PORT[,HOST:PORT...] of HTTPS over TCP (HTTP/2, HTTP/1.1); empty disables it; "
        "runs only with --cert/--key, --dev-cert or --acme-domain",
    )
    quic_listen: str = _opt(
        "auto",
        "HOST:PORT[,HOST:PORT...] of HTTP/3 over UDP; auto: the tls_listen addresses (browsers look "
        "for HTTP/3 where HTTPS is); empty disables it; runs only with a certificate",
    )
    cert: str = _opt(
        "",
        "PEM certificate chain for TLS and QUIC (leaf first), with --key; repeat the pair (or give "
        "comma lists of equal length) for several certificates, each served to the names of its "
        "subjectAltName (exact or *. wildcard), the first one to any other name",
        repeat=",",
    )
    key: str = _opt("", "PEM private key of --cert (one per --cert, in the same order)", repeat=",")
    dev_cert: bool = _opt(
        False, "create/use a local dev CA and a localhost certificate in the per-user state dir", "bool"
    )
    acme_domain: str = _opt(
        "",
        "obtain and renew HTTPS certificates from an ACME CA (RFC 8555, HTTP-01 on the cleartext "
        "listener) instead of --cert/--key: one certificate per flag for its comma-separated names "
        "(--acme-domain a.com,www.a.com --acme-domain b.com; in one value, groups apart by ';'), each "
        "renewed on its own, chosen by the name the client asks for (SNI; the first group for others)",
        repeat=";",
    )
    acme_email: str = _opt("", "contact address of the ACME account (expiry notices); empty: none")
    acme_directory: str = _opt(
        "https://acme-v02.api.letsencrypt.org/directory",
        "ACME directory URL of the CA (Let's Encrypt staging: "
        "https://acme-staging-v02.api.letsencrypt.org/directory)",
    )
    acme_ca_bundle: str = _opt(
        "", "PEM file of the CAs trusted for the ACME directory's HTTPS (a private CA); empty: the system's"
    )
    acme_retry: float = _opt(
        60.0, "seconds before a failed ACME order is tried again, doubling up to an hour", "float"
    )
    tls_front: str = _opt("own", "what serves HTTPS over TCP: own (uvloop + ssl + h2, faster) or hypercorn")
    h2_engine: str = _opt(
        "ngh2", "HTTP/2 engine of the own HTTPS front: ngh2 (libnghttp2, faster) or h2 (pure Python)"
    )
    tls_transport: str = _opt(
        "aiofastnet",
        "TLS transport under the own HTTPS front: aiofastnet (C, OpenSSL directly, less CPU) "
        "or asyncio (the event loop's own SSL transport)",
    )
    quic_backend: str = _opt(
        "qh3", "QUIC library under HTTP/3: qh3 (Rust core, about 3x faster here) or aioquic"
    )
    quic_max_data: int = _opt(
        16 * 1024**2, "QUIC connection receive window: request bytes a client may have in flight", "size"
    )
    quic_max_stream_data: int = _opt(
        4 * 1024**2, "QUIC per-stream receive window (request bodies; also what we advertise)", "size"
    )
    quic_max_streams: int = _opt(
        128, "concurrent request streams per QUIC connection (aioquic; qh3 fixes 100)", "int"
    )
    quic_idle_timeout: float = _opt(30.0, "seconds a silent QUIC connection is kept", "float")
    quic_send_buffer: int = _opt(
        1024**2, "response bytes queued in the QUIC library per connection before writers wait", "size"
    )

    def __post_init__(self) -> None:
        if self.quic_listen == "auto":
            self.quic_listen = self.tls_listen

    def validate(self) -> None:
        counts = ("max_client_connections", "rate_limit", "rate_burst", "max_tunnels", "max_client_tunnels")
        for name in counts:
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 (off) or more, got {getattr(self, name)}")
        if self.tunnel_idle_timeout <= 0:
            raise ConfigError(f"tunnel_idle_timeout must be above 0 seconds, got {self.tunnel_idle_timeout}")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        check_upstream_url(self.upstream)
        parse_shields(self.shields)
        for peer in self.peer_admins():
            if urlsplit(peer).scheme not in ("http", "https") or not urlsplit(peer).hostname:
                raise ConfigError(f"purge_peers: {peer!r} is not an http(s)://HOST:PORT admin URL")
        if self.shield_fallback not in ("origin", "error"):
            raise ConfigError(f"shield_fallback must be origin or error, got {self.shield_fallback!r}")
        if self.shield_fail_threshold < 1:
            raise ConfigError("shield_fail_threshold must be at least 1")
        if not 0 < self.shield_probe_min <= self.shield_probe_max:
            raise ConfigError("shield probe delays must be positive, shield_probe_min <= shield_probe_max")
        for cidr in filter(None, (part.strip() for part in self.trusted_proxies.split(","))):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError(f"trusted_proxies: {cidr!r} is not an address or CIDR") from None
        parse_field_names(self.strip_request_fields, "strip_request_fields")
        parse_field_names(self.forward_request_fields, "forward_request_fields")
        parse_hosts(self.hosts)
        if self.node_id and not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", self.node_id):
            raise ConfigError("node_id: letters, digits, '.', '_' and '-' only (at most 64)")
        parse_listen(self.listen)
        if self.workers < 1:
            raise ConfigError("workers must be at least 1")
        if self.cache_size < 1024 * 1024:
            raise ConfigError("cache_size must be at least 1MiB")
        if self.disk_cache and self.disk_size < 1024 * 1024:
            raise ConfigError("disk_size must be at least 1MiB")
        if self.eviction not in ("lru", "s3fifo"):
            raise ConfigError(f"eviction must be lru or s3fifo, got {self.eviction!r}")
        parse_ttl_rules(self.default_ttl)
        for listen in (self.tls_listen, self.quic_listen):
            parse_listen_list(listen)
        if self.quic_backend not in ("qh3", "aioquic"):
            raise ConfigError(f"quic_backend must be qh3 or aioquic, got {self.quic_backend!r}")
        if self.tls_front not in ("own", "hypercorn"):
            raise ConfigError(f"tls_front must be own or hypercorn, got {self.tls_front!r}")
        if self.tls_transport not in ("aiofastnet", "asyncio"):
            raise ConfigError(f"tls_transport must be aiofastnet or asyncio, got {self.tls_transport!r}")
        if self.h2_engine not in ("ngh2", "h2"):
            raise ConfigError(f"h2_engine must be ngh2 or h2, got {self.h2_engine!r}")
        if bool(self.cert) != bool(self.key):
            raise ConfigError("cert and key go together: pass both --cert and --key")
        if len(path_list(self.cert)) != len(path_list(self.key)):
            raise ConfigError(
                f"cert and key go in pairs: {len(path_list(self.cert))} --cert for "
                f"{len(path_list(self.key))} --key"
            )
        if len(path_list(self.cert)) > 1 and self.tls_front != "own":
            raise ConfigError("several certificates need tls_front = own (Hypercorn serves one)")
        acme_groups(self.acme_domain)
        if self.acme_domain:
            if self.cert or self.dev_cert:
                raise ConfigError("acme_domain obtains the certificate: leave out --cert/--key, --dev-cert")
            if not (self.tls_listen or self.quic_listen):
                raise ConfigError("acme_domain needs a TLS or QUIC listener (tls_listen, quic_listen)")
            if self.tls_front != "own":
                raise ConfigError("acme_domain needs tls_front = own (Hypercorn cannot swap certificates)")
            if urlsplit(self.acme_directory).scheme not in ("https", "http"):
                raise ConfigError(f"acme_directory must be an https:// URL, got {self.acme_directory!r}")
            if self.acme_retry <= 0:
                raise ConfigError("acme_retry must be positive")
        if self.quic_send_buffer < 64 * 1024:
            raise ConfigError("quic_send_buffer must be at least 64KiB")
        if self.quic_max_streams < 1:
            raise ConfigError("quic_max_streams must be at least 1")
        for coding in self.codings():
            if coding not in (b"br", b"zstd", b"gzip"):
                raise ConfigError(
                    f"compress_codings: unsupported coding {coding.decode()!r} (br, zstd, gzip)"
                )

    def peer_admins(self) -> list[str]:
        """The admin URLs in ``purge_peers``, in order."""
        return [p.strip() for p in self.purge_peers.split(",") if p.strip()]

    def codings(self) -> tuple[bytes, ...]:
        """The configured compress_codings, in preference order."""
        return tuple(c.strip().lower().encode() for c in self.compress_codings.split(",") if c.strip())


def check_upstream_url(url: str) -> None:
    """An upstream is ``http://HOST[:PORT]``: the node speaks cleartext HTTP/1.1 to it."""
    if not url:
        raise ConfigError("no upstream configured: pass --upstream http://HOST:PORT")
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ConfigError(f"upstream URL must be http://HOST[:PORT], got {url!r}")
    if not parts.hostname:
        raise ConfigError(f"upstream URL has no host: {url!r}")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError as exc:
        raise ConfigError(f"upstream URL {url!r}: {exc}") from None


def parse_shields(value: str) -> list[tuple[str, float]]:
    """``"http://s1:8080;weight=2, http://s2:8080"`` → [(url, weight), ...] (weight 1 by default)."""
    shields: list[tuple[str, float]] = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        url, _, params = item.partition(";")
        url = url.strip().rstrip("/")  # one spelling per shield: rendezvous hashes the URL
        weight = 1.0
        for param in filter(None, (p.strip() for p in params.split(";"))):
            name, _, raw = param.partition("=")
            if name.strip() != "weight":
                raise ConfigError(f"shields: unknown parameter {name.strip()!r} in {item!r} (only weight=N)")
            try:
                weight = float(raw)
            except ValueError:
                weight = 0.0
            if not 0 < weight < 1e6:
                raise ConfigError(f"shields: weight must be a positive number, got {raw!r} in {item!r}")
        check_upstream_url(url)
        if any(url == known for known, _ in shields):
            raise ConfigError(f"shields: {url} is listed twice")
        shields.append((url, weight))
    return shields


_DNS_NAME = re.compile(r"(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9-]{1,63}(?<!-))+")


def acme_domains(value: str) -> tuple[str, ...]:
    """``"Example.com, www.example.com"`` → ("example.com", "www.example.com"): the names of the
    ACME certificate (DNS names with a dot; no wildcard: HTTP-01 cannot validate one)."""
    names: list[str] = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        name = item.lower().rstrip(".")
        if not _DNS_NAME.fullmatch(name):
            raise ConfigError(f"acme_domain: {item!r} is not a DNS name (no wildcard, no IP address)")
        if name not in names:
            names.append(name)
    return tuple(names)


def acme_groups(value: str) -> list[tuple[str, ...]]:
    """``"a.com,www.a.com;b.com"`` → [("a.com", "www.a.com"), ("b.com",)]: one ACME certificate
    per ``;``-separated group (``--acme-domain`` given several times), in order (the first is the
    default one); a name may belong to one group only."""
    groups: list[tuple[str, ...]] = []
    seen: set[str] = set()
    for part in value.split(";"):
        names = acme_domains(part)
        if not names:
            continue
        for name in names:
            if name in seen:
                raise ConfigError(f"acme_domain: {name} is in two groups (one certificate per name)")
            seen.add(name)
        groups.append(names)
    return groups


def path_list(value: str) -> list[str]:
    """``"a.pem,b.pem"`` → ["a.pem", "b.pem"] (``--cert``/``--key`` given several times)."""
    return [part.strip() for part in value.split(",") if part.strip()]


def parse_listen_list(value: str) -> list[tuple[str, int]]:
    """``"127.0.0.1:8443,[::1]:8443"`` → [(host, port), ...]; empty → [] (listener off)."""
    return [parse_listen(part.strip()) for part in value.split(",") if part.strip()]


def parse_ttl_rules(spec: str) -> list[tuple[str, float]]:
    """``"/static/*=3600,*.js=600"`` → [(glob, seconds)]: the operator's per-path default TTLs."""
    rules = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        glob, sep, seconds = item.rpartition("=")
        try:
            rules.append((glob, float(seconds)))
        except ValueError:
            sep = ""
        if not sep or not glob:
            raise ConfigError(f"default_ttl entries are GLOB=SECONDS, got {item!r}")
    return rules


def settings() -> list[dataclasses.Field[Any]]:
    return list(dataclasses.fields(Config))


def coerce(f: dataclasses.Field[Any], value: Any) -> Any:
    kind = f.metadata["kind"]
    if isinstance(value, list) and f.metadata.get("repeat"):  # a repeated flag, a TOML array
        value = f.metadata["repeat"].join(str(item) for item in value)
    try:
        if kind == "size":
            return parse_size(value)
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            return _parse_bool(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{f.name}: {exc}") from None


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r} (use true or false)")


def load(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Merge file, environment and flags (later wins) into a validated Config."""
    values: dict[str, Any] = {}
    by_name = {f.name: f for f in settings()}
    if path is not None:
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"invalid TOML in {path}: {exc}") from None
        table = data.get("edge", data)
        for key, value in table.items():
            name = key.replace("-", "_")
            if name not in by_name:
                raise ConfigError(f"unknown setting {key!r} in {path}")
            values[name] = coerce(by_name[name], value)
    env = os.environ if env is None else env
    for name, f in by_name.items():
        raw = env.get("EDGE_" + name.upper())
        if raw is not None and raw != "":
            values[name] = coerce(f, raw)
    for name, value in (flags or {}).items():
        if value is not None:
            values[name] = coerce(by_name[name], value)
    config = Config(**values)
    config.validate()
    return config


@dataclass(frozen=True)
class ConfigSource:
    """Where a running node's settings came from, to read them again on SIGHUP.

    The environment is the process's own (what it was started with); the file is read
    again, and the command line's flags still win over both.
    """

    path: Path | None = None
    flags: Mapping[str, Any] = field(default_factory=dict)

    def load(self) -> Config:
        return load(self.path, os.environ, self.flags)
