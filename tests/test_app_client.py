"""The app's programmatic API through ``gradio_client``, against a live local server."""

from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def client(tiny_model_dir):
    from demo.models import ModelCache
    from demo.ui import build, launch

    blocks = build(tiny_model_dir, cache=ModelCache(hub_reachable=lambda: False))
    _, url, _ = launch(
        blocks, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
        quiet=True,
    )  # fmt: skip
    try:
        yield gradio_client.Client(url, verbose=False)
    finally:
        blocks.close()


def test_api_infills_and_reports_statistics(client):
    out = client.predict(
        "The cat sat on the [MASK:6] The dog sat on the log.", sampler="compare", k=3, seed=2,
        log_likelihood=True, api_name="/infill",
    )  # fmt: skip
    assert "[MASK" not in out["text"] and out["text"].startswith("The cat sat on the")
    fast, seq = out["stats"]
    assert fast["generated"] == fast["masked"] == 6 and fast["nfe"] <= 6 and fast["done"]
    assert seq["nfe"] == 6 and fast["log_likelihood"] < 0
    again = client.predict(
        "The cat sat on the [MASK:6] The dog sat on the log.", sampler="compare", k=3, seed=2,
        api_name="/infill",
    )  # fmt: skip
    assert again["text"] == out["text"]


def test_api_reports_bad_input_as_a_readable_error(client):
    with pytest.raises(Exception, match="Nothing to fill"):
        client.predict("no masks here", api_name="/infill")
    with pytest.raises(Exception, match="unreachable"):
        client.predict("a [MASK] b", model="someone/missing", api_name="/infill")


def test_streaming_run_endpoint_returns_the_final_page_state(client, tiny_model_dir):
    status, panel_a, _panel_b, stats, _plot, output = client.predict(
        tiny_model_dir, "", "The cat [MASK:5] log.", "markup", 50, "assd", 4, 1.0, 0,
        "left-to-right", False, 0, api_name="/run",
    )  # fmt: skip
    assert status == "" and "t-masked" not in panel_a and "network calls" in stats
    assert output.startswith("The cat ") and output.endswith(" log.")


def test_concurrent_requests_share_the_model_safely(client):
    """Queued and concurrent runs on one cached model give the same results as one at a time."""
    text = "Once upon a time there was a [MASK:8] who lived in the [MASK:5]."
    kw = [dict(seed=s, sampler=m, k=3) for s in (0, 1) for m in ("assd", "one-call")]
    alone = [client.predict(text, api_name="/infill", **k)["text"] for k in kw]
    jobs = [client.submit(text, api_name="/infill", **k) for k in kw * 2]
    together = [j.result(timeout=120)["text"] for j in jobs]
    assert together == alone * 2
