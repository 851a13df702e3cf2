"""Which requests may take the fast hit, and why: every request rule is classified.

``EdgeCore.fresh_hit`` answers a fresh hit without the full path's rules, so a request
carrying a field whose rule only the full path applies must never take it. The fields
are listed in ``edge.cache.reuse`` (``FAST_HIT_BLOCKERS``, ``FAST_HIT_APPLIES``,
``MISS_ONLY_FIELDS``). The first test reads the rule modules and fails on a request
field that none of the lists names, so a new rule cannot be skipped by the fast hit
without someone deciding it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from edge import config as edge_config
from edge.cache.entry import Entry
from edge.cache.freshness import freshness_policy
from edge.cache.reuse import FAST_HIT_APPLIES, FAST_HIT_BLOCKERS, MISS_ONLY_FIELDS
from edge.core import EdgeCore
from edge.http.message import Request, fields_of

EDGE = Path(__file__).resolve().parents[2] / "edge"
RULE_PACKAGES = ("cache", "core")


def _is_request_fields(node: ast.expr, aliases: set[str]) -> bool:
    """``req.fields`` (any name ending in req/request), or a local name bound to it."""
    if isinstance(node, ast.Name):
        return node.id in aliases
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "fields"
        and isinstance(node.value, ast.Name)
        and node.value.id in ("req", "request")
    )


def _literal(node: ast.expr) -> bytes | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, bytes) else None


def request_field_reads(root: Path = EDGE) -> dict[bytes, set[str]]:
    """Every request field name read by the rule modules, with where it is read."""
    reads: dict[bytes, set[str]] = {}
    for package in RULE_PACKAGES:
        for path in sorted((root / package).glob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for function in ast.walk(tree):
                if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                aliases = {
                    target.id
                    for node in ast.walk(function)
                    if isinstance(node, ast.Assign) and _is_request_fields(node.value, set())
                    for target in node.targets
                    if isinstance(target, ast.Name)
                }
                for node in ast.walk(function):
                    name = None
                    if (
                        isinstance(node, ast.Call)
                        and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "get"
                        and _is_request_fields(node.func.value, aliases)
                        and node.args
                    ):
                        name = _literal(node.args[0])
                    elif isinstance(node, ast.Subscript) and _is_request_fields(node.value, aliases):
                        name = _literal(node.slice)
                    elif (
                        isinstance(node, ast.Compare)
                        and len(node.ops) == 1
                        and isinstance(node.ops[0], ast.In | ast.NotIn)
                        and _is_request_fields(node.comparators[0], aliases)
                    ):
                        name = _literal(node.left)
                    if name is not None:
                        reads.setdefault(name, set()).add(f"{path.relative_to(root.parent)}:{node.lineno}")
    return reads


def test_every_request_field_a_rule_reads_is_classified() -> None:
    classified = FAST_HIT_BLOCKERS | FAST_HIT_APPLIES | MISS_ONLY_FIELDS
    unclassified = {name: where for name, where in request_field_reads().items() if name not in classified}
    assert unclassified == {}, (
        "a rule reads a request field the fast hit does not know about: add it to FAST_HIT_BLOCKERS "
        "(the fast hit must not answer such requests), FAST_HIT_APPLIES or MISS_ONLY_FIELDS"
    )


def test_the_scanner_sees_the_rules_it_guards(tmp_path: Path) -> None:
    reads = request_field_reads()
    for known in (b"range", b"if-range", b"cache-control", b"pragma", b"if-none-match", b"authorization"):
        assert known in reads, known
    (tmp_path / "cache").mkdir()
    (tmp_path / "core").mkdir()
    (tmp_path / "cache" / "new_rule.py").write_text(
        "def rule(req):\n    fields = req.fields\n    return fields.get(b'x-new') or b'x-other' in req.fields\n"
    )
    assert set(request_field_reads(tmp_path)) == {b"x-new", b"x-other"}


NOW = 1_700_000_000.0


@pytest.fixture
def core() -> EdgeCore:
    config = edge_config.load(None, {}, {"upstream": "http://127.0.0.1:9", "listen": "127.0.0.1:1"})
    node = EdgeCore(config, clock=lambda: NOW)
    fields = [(b"Cache-Control", b"max-age=600"), (b"ETag", b'"a"'), (b"Content-Type", b"image/png")]
    entry = Entry(
        b"http://h/a.png", 200, b"OK", fields, b"x" * 100, freshness_policy(200, fields, NOW), NOW, 0.0
    )
    node.store.put(entry.key, entry, entry.charge)
    return node


def request(*extra: tuple[bytes, bytes], method: bytes = b"GET") -> Request:
    headers = [(b"Host", b"h"), *extra]
    return Request(method, b"/a.png", headers, fields_of(headers), host=b"h")


def test_a_plain_request_takes_the_fast_hit(core: EdgeCore) -> None:
    entry = core.fresh_hit(request(), NOW)
    assert entry is not None and entry.key == b"http://h/a.png"
    assert core.fresh_hit(request(method=b"HEAD"), NOW) is entry
    assert core.fresh_hit(request(method=b"POST"), NOW) is None
    assert core.fresh_hit(request(), NOW + 600) is None, "stale: the full path decides"


@pytest.mark.parametrize("name", sorted(FAST_HIT_BLOCKERS))
def test_a_request_carrying_a_full_path_field_never_takes_the_fast_hit(core: EdgeCore, name: bytes) -> None:
    assert core.fresh_hit(request((name.title(), b"0")), NOW) is None


def test_request_fields_the_fast_hit_ignores_are_irrelevant_to_a_hit(core: EdgeCore) -> None:
    assert core.fresh_hit(request((b"Authorization", b"Bearer x"), (b"X-Forwarded-Proto", b"https")), NOW)
