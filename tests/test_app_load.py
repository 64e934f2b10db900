"""The demo server under load (slow): evals/load_test.py, small, against a server it starts."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_concurrent_cancelled_and_hostile_requests_keep_results_apart_and_memory_flat(tmp_path):
    """6 clients x 24 requests: ordinary ones equal their result alone, cancellations end,
    hostile ones are refused, and the server's RSS does not grow in the second half."""
    for package in ("locust", "gradio"):  # not imported here: locust patches the process (gevent)
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{package} is not installed")
    cmd = [sys.executable, "evals/load_test.py", "--users", "6", "--requests", "24"]
    run = subprocess.run(
        [*cmd, "--time-limit", "500", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = json.loads((tmp_path / "load_test.json").read_text())
    assert run.returncode == 0 and report["ok"], run.stdout[-4000:] + run.stderr[-4000:]
    assert report["requests"] == 6 * 24 and report["n_problems"] == 0
    assert {"infill", "hostile"} <= set(report["by_kind"])
    rss = report["rss_mb"]
    assert rss["after"] - rss["halfway"] < 30, rss
    assert (tmp_path / "rss.png").stat().st_size > 5_000
