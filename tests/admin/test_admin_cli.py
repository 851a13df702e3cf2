"""``edge purge`` (purge_main) against a live admin API and against nothing at all."""

from __future__ import annotations

import asyncio
import json

import pytest

from edge.admin.client import purge_main
from tests.admin.conftest import TOKEN, Admin
from tests.support.nodes import Edge, free_port
from tests.support.scripted_origin import Gate, ScriptedOrigin, fixed

pytestmark = pytest.mark.asyncio

CACHEABLE = [("Cache-Control", "max-age=600"), ("Surrogate-Key", "site")]


async def run(*argv: str) -> int:
    """purge_main is synchronous (httpx.Client); keep the event loop free to serve it."""
    return await asyncio.to_thread(purge_main, list(argv))


async def warm(origin: ScriptedOrigin, edge: Edge, *paths: str) -> None:
    async with edge.client() as client:
        for path in paths:
            origin.routes[path] = fixed(200, b"x", CACHEABLE)
            assert (await client.get(path)).status_code == 200


async def test_purge_url_prefix_tag_all_soft(
    origin: ScriptedOrigin, edge: Edge, admin: Admin, capsys: pytest.CaptureFixture[str]
) -> None:
    await warm(origin, edge, "/a", "/dir/b", "/dir/c", "/d", "/e")
    base = ["--admin", admin.url, "--token", TOKEN]
    assert await run(f"{edge.url}/a", *base) == 0
    assert await run("--prefix", f"{edge.url}/dir/", *base) == 0
    assert await run("--tag", "site", "--soft", *base) == 0
    assert await run("--all", *base) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["1 purged", "2 purged", "2 marked stale", "2 purged"]
    assert err == ""
    assert len(edge.core.store) == 0


async def test_token_from_environment(
    origin: ScriptedOrigin,
    edge: Edge,
    admin: Admin,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await warm(origin, edge, "/a")
    monkeypatch.setenv("EDGE_ADMIN_TOKEN", TOKEN)
    assert await run(f"{edge.url}/a", "--admin", admin.url + "/") == 0
    assert capsys.readouterr().out == "1 purged\n"


async def test_refused_token_is_one_line_and_status_2(
    edge: Edge, admin: Admin, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("EDGE_ADMIN_TOKEN", raising=False)
    assert await run("--all", "--admin", admin.url, "--token", "wrong") == 2
    assert await run("--all", "--admin", admin.url) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0] == "edge purge: error: admin API refused (401): wrong bearer token"
    assert lines[1].startswith("edge purge: error: admin API refused (401): missing bearer token")
    assert "EDGE_ADMIN_TOKEN" in lines[1]


async def test_bad_request_reason_reaches_the_operator(
    edge: Edge, admin: Admin, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run("/no-host", "--admin", admin.url, "--token", TOKEN) == 2
    err = capsys.readouterr().err
    assert err == "edge purge: error: admin API refused (400): URL '/no-host' has no host\n"


async def test_closed_port_is_one_line_and_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert await run("--all", "--admin", f"http://127.0.0.1:{port}", "--token", "t") == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"edge purge: error: cannot reach the admin API at http://127.0.0.1:{port}: ")
    assert "refused" in err.lower()
    assert "Traceback" not in err


async def test_one_node_with_json(
    origin: ScriptedOrigin, edge: Edge, admin: Admin, capsys: pytest.CaptureFixture[str]
) -> None:
    await warm(origin, edge, "/a", "/b")
    assert await run("--all", "--soft", "--json", "--admin", admin.url, "--token", TOKEN) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {
        "nodes": [{"node": admin.url, "admin": admin.url, "purged": 2}],
        "purged": 2,
        "soft": True,
        "ok": True,
    }
    assert err == ""


async def test_timeout_bounds_a_node_that_never_answers(
    origin: ScriptedOrigin, capsys: pytest.CaptureFixture[str]
) -> None:
    never = Gate()  # a server that takes the request and never answers
    origin.routes["/purge"] = fixed(200, b'{"purged": 1, "soft": false}', gate=never)
    assert await run("--all", "--admin", origin.url, "--token", "t", "--timeout", "0.5") == 2
    assert capsys.readouterr() == (
        "",
        f"edge purge: error: admin API at {origin.url} did not answer within 0.5s\n",
    )
    await never.reached()


async def test_server_error_is_one_line_and_status_2(
    origin: ScriptedOrigin, capsys: pytest.CaptureFixture[str]
) -> None:
    origin.routes["/purge"] = fixed(503, b"overloaded\n")
    assert await run("--all", "--admin", origin.url, "--token", "t") == 2
    assert capsys.readouterr() == ("", "edge purge: error: admin API failed (503): overloaded\n")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["http://h/a", "--tag", "t"],
        ["--prefix", "p", "--all"],
        ["--all", "--admin", "not a url"],
        ["--all", "--admin", "ftp://127.0.0.1:1"],
        ["--all", "--timeout", "0"],
        ["--all", "--peers", "/nonexistent/peers"],
    ],
)
async def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert await run(*argv, "--token", "t") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip()
