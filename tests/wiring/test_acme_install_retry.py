"""A certificate the ACME client obtained but the listeners failed to load is loaded again
(with backoff) until it is, not left until renewal is due (``AcmeManager.run``).

The order itself is stood in for here (a certificate signed by a local CA written where an
issued one goes): what is checked is the manager's retry rule, which the Pebble-backed
tests in ``test_acme.py`` cannot make fail on purpose.
"""

from __future__ import annotations

import asyncio
import shutil
import types
from pathlib import Path

import pytest

from edge.wiring.acme import AcmeManager, AcmePaths, Issued, read_issued
from tests.support.certs import TestCA

pytestmark = pytest.mark.asyncio


class _Stand(AcmeManager):
    def __init__(self, paths: AcmePaths, leaf_cert: Path, leaf_key: Path, failures: int) -> None:
        config = types.SimpleNamespace(acme_retry=0.02, acme_directory="https://ca.test/dir")
        super().__init__(config, None, self.load, paths=paths)  # type: ignore[arg-type]
        self.leaf = (leaf_cert, leaf_key)
        self.left_to_fail = failures
        self.orders = 0
        self.loads = 0
        self.loaded = asyncio.Event()

    def _order(self, loop: asyncio.AbstractEventLoop) -> Issued:
        self.orders += 1
        self.paths.cert.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.leaf[1], self.paths.key)
        shutil.copy(self.leaf[0], self.paths.cert)
        issued = read_issued(self.paths.cert)
        assert issued is not None
        return issued

    def load(self) -> None:
        self.loads += 1
        if self.left_to_fail:
            self.left_to_fail -= 1
            raise ValueError("the listener refused it")
        self.loaded.set()


async def test_a_certificate_obtained_but_not_loaded_is_loaded_again_until_it_is(tmp_path: Path) -> None:
    leaf = TestCA(tmp_path / "ca").issue("a", ["a.test"])
    manager = _Stand(AcmePaths(("a.test",), tmp_path / "state"), leaf.cert, leaf.key, failures=2)
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    try:
        await asyncio.wait_for(manager.loaded.wait(), 10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert (manager.orders, manager.loads, manager.failures, manager.issued) == (1, 3, 2, 1)
