"""Imports run one way: the contract in pyproject.toml ([tool.importlinter]) holds.

A module that imports from a higher layer (the core importing a front, the config
importing the upstream client) or a front importing the admin API fails this test,
naming the import. ``python -m tests.architecture.report`` prints the whole graph.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from importlinter.cli import lint_imports

from tests.architecture.report import graph, layer_of

REPO = Path(__file__).resolve().parents[2]


def test_import_linter_contract_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True, no_logo=True) == 0


def test_report_sees_no_upward_import() -> None:
    """The report's own reading agrees with import-linter (so its before/after figures can be trusted)."""
    upward = [(src, dst) for src, dst in graph(REPO) if layer_of(dst)[0] > layer_of(src)[0]]
    assert upward == []


def test_report_finds_an_upward_import(tmp_path: Path) -> None:
    """The report is not blind: a core module importing a front is flagged."""
    for name in ("core", "fronts"):
        (tmp_path / "edge" / name).mkdir(parents=True)
        (tmp_path / "edge" / name / "__init__.py").write_text("")
    (tmp_path / "edge" / "__init__.py").write_text("")
    (tmp_path / "edge" / "fronts" / "h1.py").write_text("X = 1\n")
    (tmp_path / "edge" / "core" / "node.py").write_text("from edge.fronts.h1 import X\n")
    assert [(s, d) for s, d in graph(tmp_path) if layer_of(d)[0] > layer_of(s)[0]] == [
        ("edge.core", "edge.fronts")
    ]
