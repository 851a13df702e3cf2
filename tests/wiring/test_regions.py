"""``python -m benchmarks.regions --quick`` end to end: namespaces, delay relays, real processes.

Runs only as root on a machine where ``ip netns add`` works (probed with a throwaway
name); skips with the reason otherwise. The run prints its own checks; this test asserts
them, the exit status, and that no namespace of the run's prefix is left afterwards.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 240


def _netns_reason() -> str | None:
    """Why network namespaces cannot be used here (None when they can)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root (ip netns)"
    if shutil.which("ip") is None:
        return "iproute2 (ip) not installed"
    name = f"edgereg-probe-{os.getpid()}"
    try:
        added = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"ip netns add failed: {exc}"
    if added.returncode != 0:
        return f"ip netns add failed: {added.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
    return None


_REASON = _netns_reason()


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


@pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
def test_regions_quick(tmp_path: Path) -> None:
    plot = tmp_path / "regions.png"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.regions", "--quick", "--plot", str(plot)],
        cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT, env=env,
    )  # fmt: skip
    out = proc.stdout
    detail = f"stdout:\n{out}\nstderr:\n{proc.stderr[-3000:]}"
    prefix = re.search(r"run prefix (edgereg-\d+-)", out)
    assert prefix, detail
    assert not [n for n in _namespaces() if n.startswith(prefix.group(1))], (
        "namespaces left behind\n" + detail
    )
    assert proc.returncode == 0, detail

    assert "delay mechanism:" in out, detail
    # warm p50 below the region's edge->shield RTT, for every region
    warm = re.findall(r"CHECK warm p50 (\w+) ([\d.]+) ms < edge->shield RTT (\d+) ms: (\w+)", out)
    assert {r for r, *_ in warm} == {"us", "eu", "ap"}, detail
    for region, p50, rtt, verdict in warm:
        assert float(p50) < float(rtt) and verdict == "ok", f"{region}: {p50} ms vs {rtt} ms\n{detail}"
    fetched = re.search(r"CHECK origin full fetches \(200\) (\d+) == distinct objects (\d+): ok", out)
    assert fetched and fetched.group(1) == fetched.group(2), detail
    errors = re.search(r"CHECK client errors \(HTTP/1.1, shield-1 killed in pass 3\) = (\d+): ok", out)
    assert errors and errors.group(1) == "0", detail
    assert "all checks ok" in out, detail
    assert plot.is_file() and plot.stat().st_size > 0, detail
