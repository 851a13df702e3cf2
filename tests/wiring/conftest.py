"""Fixtures of the process-level tests: a real origin process serving a small site."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.nodes import free_port
from tests.wiring.test_shutdown import wait_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[int]:
    root = tmp_path / "site"
    root.mkdir()
    (root / "app.js").write_bytes(b"console.log('x');\n" * 100)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "origin", "serve", "--root", str(root), "--listen", f"127.0.0.1:{port}"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_port(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
