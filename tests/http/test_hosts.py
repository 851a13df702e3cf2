"""The host allow-list (edge.http.hosts) and its setting (edge.config.parse_hosts)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.config import ConfigError, parse_hosts
from edge.http.hosts import HostAllowList, host_name

LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
NAME = st.lists(LABEL, min_size=1, max_size=4).map(".".join)
PORT = st.one_of(st.just(""), st.integers(0, 65535).map(lambda p: f":{p}"))


def allow(spec: str) -> HostAllowList:
    allowed = HostAllowList.of(parse_hosts(spec))
    assert allowed is not None
    return allowed


def test_exact_names_wildcards_and_addresses() -> None:
    hosts = allow("example.com, *.static.example.com, 127.0.0.1, ::1")
    for ok in (b"example.com", b"EXAMPLE.com:8080", b"example.com.", b"a.static.example.com",
               b"a.b.static.example.com:443", b"127.0.0.1:8080", b"[::1]", b"[::1]:8443"):  # fmt: skip
        assert hosts.allows(ok), ok
    for refused in (b"evil.example", b"www.example.com", b"static.example.com", b".static.example.com",
                    b"astatic.example.com", b"example.com.evil", b"example.co", b"ex%61mple.com",
                    b"127.0.0.2", b"[::2]", b"", b"example.com..", b"xexample.com"):  # fmt: skip
        assert not hosts.allows(refused), refused


def test_an_empty_list_serves_any_host() -> None:
    assert HostAllowList.of(parse_hosts("")) is None
    assert HostAllowList.of(parse_hosts(" , ")) is None


@pytest.mark.parametrize(
    "bad",
    ["*", "*.", "http://example.com", "example.com:80", "example.com/x", "a..b", "*.*.a", "[x]", "12:80"],
)
def test_the_setting_takes_names_wildcards_and_addresses_only(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_hosts(bad)


def test_the_setting_is_normalised() -> None:
    assert parse_hosts("Example.COM., *.Example.com, ::1, [::1], example.com") == (
        "example.com", "*.example.com", "[::1]"
    )  # fmt: skip


def _model(patterns: list[str], authority: str) -> bool:
    """The rule as words: the name (port and one trailing dot off, lower case) equals a
    pattern, or ends with a wildcard's ``.suffix`` after at least one more character."""
    name = authority.lower().rsplit(":", 1)[0] if ":" in authority else authority.lower()
    name = name[:-1] if name.endswith(".") else name
    for pattern in patterns:
        if pattern.startswith("*."):
            suffix = pattern[1:]
            if name.endswith(suffix) and len(name) > len(suffix):
                return True
        elif name == pattern:
            return True
    return False


@given(
    patterns=st.lists(st.tuples(st.booleans(), NAME), min_size=1, max_size=4),
    name=NAME,
    port=PORT,
    dot=st.booleans(),
    upper=st.booleans(),
)
def test_the_matcher_agrees_with_the_rule(
    patterns: list[tuple[bool, str]], name: str, port: str, dot: bool, upper: bool
) -> None:
    spec = [("*." if wild else "") + pattern for wild, pattern in patterns]
    authority = name + ("." if dot else "") + port
    if upper:
        authority = authority.upper()
    assert allow(",".join(spec)).allows(authority.encode()) == _model(
        list(parse_hosts(",".join(spec))), authority
    )


@given(pattern=NAME, sub=NAME, port=PORT)
def test_a_wildcard_takes_every_subdomain_and_nothing_beside_it(pattern: str, sub: str, port: str) -> None:
    hosts = allow("*." + pattern)
    assert hosts.allows(f"{sub}.{pattern}{port}".encode())
    assert not hosts.allows(f"{pattern}{port}".encode()), "the domain itself is not a subdomain"
    assert not hosts.allows(f"{sub}{pattern}{port}".encode()) or f"{sub}{pattern}".endswith("." + pattern)
    assert not hosts.allows(f"{pattern}.{sub}{port}".encode()) or f"{pattern}.{sub}".endswith("." + pattern)


@given(allowed=NAME, other=NAME, port=PORT)
def test_an_exact_name_takes_only_itself(allowed: str, other: str, port: str) -> None:
    hosts = allow(allowed)
    assert hosts.allows(f"{allowed}{port}".encode())
    assert hosts.allows(f"{other}{port}".encode()) == (other == allowed)


@given(st.binary(max_size=40))
def test_host_name_never_keeps_a_port(raw: bytes) -> None:
    name = host_name(raw)
    assert name == name.lower()
    if not name.startswith(b"["):
        assert b":" not in name
