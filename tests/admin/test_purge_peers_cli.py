"""``edge purge`` across a fleet: a shield and two edges behind it, each with its own admin API.

The fleet is real: the edges fetch from the shield, the shield from a scripted
origin, every node on its own loopback ports. Each node's ``EdgeCore.purge`` is
wrapped to note the node's name, so a test sees the order in which the admin
APIs actually ran their purges.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio

from edge.admin.client import DEFAULT_ADMIN, Node, UsageError, build_purge_parser, nodes_from_args, purge_main
from edge.cache.purge import PurgeKind
from tests.admin.conftest import TOKEN, Admin, start_admin
from tests.support.nodes import Edge, free_port, start_edge
from tests.support.scripted_origin import Gate, ScriptedOrigin, fixed
from tests.support.waiting import within

pytestmark = pytest.mark.asyncio

REPO = Path(__file__).resolve().parents[2]
HOST = "cdn.example"
URL = f"http://{HOST}/app.js"
CACHEABLE = [("Cache-Control", "max-age=600"), ("Surrogate-Key", "site")]


@dataclass
class Member:
    name: str
    edge: Edge
    admin: Admin

    @property
    def url(self) -> str:
        """The admin API's base URL, as an operator lists it."""
        return self.admin.url

    @property
    def stored(self) -> int:
        return len(self.edge.core.store)


@dataclass
class Fleet:
    shield: Member
    a: Member
    b: Member
    purged: list[str] = field(default_factory=list)
    """Member names in the order their admin APIs ran a purge."""

    @property
    def members(self) -> list[Member]:
        return [self.shield, self.a, self.b]


async def start_member(
    stack: AsyncExitStack, name: str, upstream: str, purged: list[str], monkeypatch: pytest.MonkeyPatch
) -> Member:
    edge = await start_edge(upstream, read_timeout="2", connect_timeout="1")
    stack.push_async_callback(edge.core.aclose)
    stack.callback(edge.server.close)
    admin, shutdown, task = await start_admin(edge.core, TOKEN)

    async def stop_admin() -> None:
        shutdown.set()
        await asyncio.wait_for(task, 5)

    stack.push_async_callback(stop_admin)
    core_purge = edge.core.purge

    def noted(kind: PurgeKind, target: str = "", *, soft: bool = False) -> int:
        purged.append(name)
        return core_purge(kind, target, soft=soft)

    monkeypatch.setattr(edge.core, "purge", noted)
    return Member(name, edge, admin)


@pytest_asyncio.fixture
async def fleet(origin: ScriptedOrigin, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Fleet]:
    """A shield in front of the origin and edges "edge-a" and "edge-b" in front of the shield."""
    purged: list[str] = []
    async with AsyncExitStack() as stack:
        shield = await start_member(stack, "shield", origin.url, purged, monkeypatch)
        a = await start_member(stack, "edge-a", shield.edge.url, purged, monkeypatch)
        b = await start_member(stack, "edge-b", shield.edge.url, purged, monkeypatch)
        yield Fleet(shield, a, b, purged)


@pytest_asyncio.fixture
async def fake_admin() -> AsyncIterator[ScriptedOrigin]:
    """A server that is no admin API: each test routes what its /…/purge paths answer."""
    server = ScriptedOrigin()
    await server.start()
    yield server
    await server.stop()


async def get(member: Member, path: str = "/app.js") -> bytes:
    async with member.edge.client() as client:
        resp = await client.get(path, headers={"Host": HOST})
        assert resp.status_code == 200
        return resp.content


async def warm(origin: ScriptedOrigin, fleet: Fleet, body: bytes = b"v1") -> None:
    """Every member stores the object: the edges fetched it through the shield."""
    origin.routes["/app.js"] = fixed(200, body, CACHEABLE)
    assert await get(fleet.a) == body
    assert await get(fleet.b) == body
    assert [m.stored for m in fleet.members] == [1, 1, 1]


async def run(*argv: str) -> int:
    """purge_main runs its own event loop; a thread keeps this one free to serve the fleet."""
    return await asyncio.to_thread(purge_main, list(argv))


def peers_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "peers"
    path.write_text(text)
    return str(path)


async def test_several_admin_flags_purge_every_tier_in_the_order_given(
    origin: ScriptedOrigin, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    shield, a, b = fleet.members
    await warm(origin, fleet)
    origin.routes["/app.js"] = fixed(200, b"v2", CACHEABLE)

    assert await run(URL, "--admin", shield.url, "--admin", f"{a.url},{b.url}", "--token", TOKEN) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"{shield.url}: 1 purged",
        f"{a.url}: 1 purged",
        f"{b.url}: 1 purged",
        "total: 3 purged on 3 of 3 nodes",
    ]
    assert err == ""
    assert fleet.purged == ["shield", "edge-a", "edge-b"]
    assert await get(a) == b"v2"  # through the purged shield, from the origin

    # The order is the one given, not the fleet's: edges first this time (and soft).
    assert await run(URL, "--soft", "--admin", f"{b.url},{a.url},{shield.url}", "--token", TOKEN) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{b.url}: 0 marked stale",
        f"{a.url}: 1 marked stale",
        f"{shield.url}: 1 marked stale",
        "total: 2 marked stale on 3 of 3 nodes",
    ]
    assert fleet.purged[3:] == ["edge-b", "edge-a", "shield"]


async def test_peers_file_with_comments_and_names_keeps_its_order(
    origin: ScriptedOrigin, fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shield, a, b = fleet.members
    await warm(origin, fleet)
    peers = peers_file(
        tmp_path,
        f"# shields first, then the edges behind them\n"
        f"{shield.url}   shield-eu   # the origin shield\n"
        f"\n"
        f"  {b.url}\tedge-eu-2\n"
        f"    # no name: the URL names it\n"
        f"{a.url}\n",
    )
    assert await run("--tag", "site", "--soft", "--peers", peers, "--token", TOKEN) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "shield-eu: 1 marked stale",
        "edge-eu-2: 1 marked stale",
        f"{a.url}: 1 marked stale",
        "total: 3 marked stale on 3 of 3 nodes",
    ]
    assert err == ""
    assert fleet.purged == ["shield", "edge-b", "edge-a"]


async def test_node_down_the_others_are_still_purged_and_exit_2(
    origin: ScriptedOrigin, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    shield, a, b = fleet.members
    await warm(origin, fleet)
    down = f"http://127.0.0.1:{free_port()}"
    assert await run(URL, "--admin", f"{shield.url},{down},{a.url},{b.url}", "--token", TOKEN) == 2
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"{shield.url}: 1 purged",
        f"{down}: error: cannot reach the admin API at {down}: Connection refused",
        f"{a.url}: 1 purged",
        f"{b.url}: 1 purged",
        "total: 3 purged on 3 of 4 nodes",
    ]
    assert err == f"edge purge: error: 1 of 4 nodes failed ({down}); the others were purged\n"
    assert [m.stored for m in fleet.members] == [0, 0, 0]


async def test_refused_token_timeout_and_5xx_fail_only_their_node(
    origin: ScriptedOrigin,
    fleet: Fleet,
    fake_admin: ScriptedOrigin,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shield, a, b = fleet.members
    await warm(origin, fleet)
    never = Gate()  # never opened: that "admin API" accepts the request and never answers
    fake_admin.routes["/stuck/purge"] = fixed(200, b'{"purged": 9}', gate=never)
    fake_admin.routes["/down/purge"] = fixed(502, b"bad gateway\n")
    monkeypatch.setenv("EU_A_TOKEN", "not-the-token")
    monkeypatch.setenv("EU_B_TOKEN", TOKEN)
    peers = peers_file(
        tmp_path,
        f"{shield.url} shield\n"
        f"{a.url} edge-a token=EU_A_TOKEN\n"
        f"{fake_admin.url}/stuck stuck\n"
        f"{fake_admin.url}/down down\n"
        f"{b.url} edge-b token=EU_B_TOKEN\n",
    )
    assert await run(URL, "--peers", peers, "--token", TOKEN, "--timeout", "2") == 2
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "shield: 1 purged",
        "edge-a: error: admin API refused (401): wrong bearer token",
        f"stuck: error: admin API at {fake_admin.url}/stuck did not answer within 2s",
        "down: error: admin API failed (502): bad gateway",
        "edge-b: 1 purged",
        "total: 2 purged on 2 of 5 nodes",
    ]
    assert err == "edge purge: error: 3 of 5 nodes failed (edge-a, stuck, down); the others were purged\n"
    assert [m.stored for m in fleet.members] == [0, 1, 0]
    assert fleet.purged == ["shield", "edge-b"]
    await within(never.reached(), "the stuck node saw its request")


async def test_json_reports_every_node(
    origin: ScriptedOrigin, fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shield, a, b = fleet.members
    await warm(origin, fleet)
    down = f"http://127.0.0.1:{free_port()}"
    assert await run("--all", "--json", "--admin", f"{shield.url},{down},{a.url}", "--token", TOKEN) == 2
    out, err = capsys.readouterr()
    assert out.count("\n") == 1
    assert json.loads(out) == {
        "nodes": [
            {"node": shield.url, "admin": shield.url, "purged": 1},
            {
                "node": down,
                "admin": down,
                "error": f"cannot reach the admin API at {down}: Connection refused",
            },
            {"node": a.url, "admin": a.url, "purged": 1},
        ],
        "purged": 2,
        "soft": False,
        "ok": False,
    }
    assert err == f"edge purge: error: 1 of 3 nodes failed ({down}); the others were purged\n"

    peers = peers_file(tmp_path, f"{b.url} edge-b\n")
    assert await run("--all", "--soft", "--json", "--peers", peers, "--token", TOKEN) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {
        "nodes": [{"node": "edge-b", "admin": b.url, "purged": 1}],
        "purged": 1,
        "soft": True,
        "ok": True,
    }
    assert err == ""


async def test_one_node_from_a_peers_file_prints_todays_output(
    origin: ScriptedOrigin, fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await warm(origin, fleet)
    peers = peers_file(tmp_path, f"# just the shield\n{fleet.shield.url} shield\n")
    assert await run(URL, "--peers", peers, "--token", TOKEN) == 0
    assert capsys.readouterr() == ("1 purged\n", "")


@pytest.mark.parametrize(
    ("peers", "admin", "error"),
    [
        ("http//typo node\n", "", "{peers} line 1: bad admin URL 'http//typo': use http:// or https://"),
        (
            "# two names?\nhttp://127.0.0.1:1 one two\n",
            "",
            "{peers} line 2: expected URL [NAME] [token=ENVVAR], got 3 fields",
        ),
        (
            "http://127.0.0.1:1 n token=EDGE_TEST_UNSET_TOKEN\n",
            "",
            "{peers} line 1: environment variable EDGE_TEST_UNSET_TOKEN (token=) is not set",
        ),
        ("http://127.0.0.1:1 token=\n", "", "{peers} line 1: token= needs an environment variable name"),
        ("# nothing but comments\n\n", "", "peers file {peers} lists no admin URL"),
        (None, "", "cannot read peers file {peers}: No such file or directory"),
        ("", "http://127.0.0.1:1,ftp://h", "bad --admin URL 'ftp://h': use http:// or https://"),
        ("", " , ", "--admin ' , ' names no URL"),
    ],
)
async def test_usage_errors_are_reported_before_any_node_is_purged(
    origin: ScriptedOrigin,
    fleet: Fleet,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    peers: str | None,
    admin: str,
    error: str,
) -> None:
    await warm(origin, fleet)
    monkeypatch.delenv("EDGE_TEST_UNSET_TOKEN", raising=False)
    path = tmp_path / "peers"
    if peers is not None:
        path.write_text(peers)
    argv = ["--all", "--token", TOKEN, "--admin", fleet.shield.url]
    argv += ["--admin", admin] if admin else ["--peers", str(path)]
    assert await run(*argv) == 2
    assert capsys.readouterr() == ("", f"edge purge: error: {error.format(peers=path)}\n")
    assert fleet.purged == []
    assert fleet.shield.stored == 1


async def test_nodes_keep_command_line_order_names_and_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_ADMIN_TOKEN", "from-env")
    monkeypatch.setenv("SHIELD_TOKEN", "shield-secret")
    peers = peers_file(tmp_path, "http://s:9090 shield token=SHIELD_TOKEN\nhttp://e1:9090\n")

    def nodes(*argv: str) -> list[Node]:
        return nodes_from_args(build_purge_parser().parse_args(["--all", *argv]))

    assert nodes() == [Node(DEFAULT_ADMIN, DEFAULT_ADMIN, "from-env")]
    assert nodes("--admin", "http://o:1", "--peers", peers, "--admin", "http://e2:1, http://e3:1/") == [
        Node("http://o:1", "http://o:1", "from-env"),
        Node("shield", "http://s:9090", "shield-secret"),
        Node("http://e1:9090", "http://e1:9090", "from-env"),
        Node("http://e2:1", "http://e2:1", "from-env"),
        Node("http://e3:1/", "http://e3:1/", "from-env"),
    ]
    assert [n.token for n in nodes("--peers", peers, "--token", "flag")] == ["shield-secret", "flag"]
    with pytest.raises(UsageError):
        nodes("--admin", "127.0.0.1:9090")  # no scheme


async def edge_purge(*argv: str) -> tuple[int, str, str]:
    """``python -m edge.cli purge ...`` as a separate process, as an operator runs it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge.cli",
        "purge",
        *argv,
        cwd=REPO,
        env={**os.environ, "EDGE_ADMIN_TOKEN": TOKEN},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await within(proc.communicate(), "edge purge finished", timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_edge_purge_as_a_process(origin: ScriptedOrigin, fleet: Fleet, tmp_path: Path) -> None:
    shield, a, b = fleet.members
    await warm(origin, fleet)

    assert await edge_purge(URL, "--admin", a.url) == (0, "1 purged\n", "")

    down = f"http://127.0.0.1:{free_port()}"
    peers = peers_file(tmp_path, f"{shield.url} shield\n{down} gone\n{a.url} edge-a\n{b.url} edge-b\n")
    status, out, err = await edge_purge(URL, "--peers", peers)
    assert status == 2
    assert out.splitlines() == [
        "shield: 1 purged",
        f"gone: error: cannot reach the admin API at {down}: Connection refused",
        "edge-a: 0 purged",
        "edge-b: 1 purged",
        "total: 2 purged on 3 of 4 nodes",
    ]
    assert err == "edge purge: error: 1 of 4 nodes failed (gone); the others were purged\n"
    assert fleet.purged == ["edge-a", "shield", "edge-a", "edge-b"]

    status, out, _ = await edge_purge("--help")
    assert status == 0
    assert "shields before the edges" in " ".join(out.split())
    assert "the exit status is 2" in " ".join(out.split())
