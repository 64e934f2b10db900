"""The app's programmatic API through ``gradio_client``, against a live local server."""

from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

TEXT = "The cat sat on the [MASK:6] The dog sat on the log."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    from demo.models import ModelCache
    from demo.ui import build, launch

    blocks = build(tiny_model_dir, cache=ModelCache(hub_reachable=lambda: False))
    _, url, _ = launch(
        blocks,
        server_name="127.0.0.1",
        server_port=free_port(),
        prevent_thread_lock=True,
        quiet=True,
    )
    try:
        yield url
    finally:
        blocks.close()


@pytest.fixture(scope="module")
def client(server):
    return gradio_client.Client(server, verbose=False)


def test_api_infills_with_three_lanes_and_reports_statistics(client):
    out = client.predict(TEXT, compare=True, sampler="assd", k=3, seed=2, api_name="/infill")
    assert out["done"] and "[MASK" not in out["text"] and out["text"].startswith("The cat sat")
    fast, seq, loose = out["stats"]
    assert [s["lane"] for s in out["stats"]] == ["assd", "sequential", "unverified"]
    assert fast["generated"] == fast["masked"] == 6 and fast["nfe"] <= 6 and fast["done"]
    assert seq["nfe"] == 6 and loose["nfe"] == 2 and not loose["exact"]  # 4 tokens per call
    assert all(s["log_likelihood"] < 0 and s["wall_s"] > 0 for s in out["stats"])
    assert len(out["texts"]) == 3 and out["texts"][0] == out["text"]
    again = client.predict(TEXT, compare=True, sampler="assd", k=3, seed=2, api_name="/infill")
    assert again["texts"] == out["texts"]


def test_api_reports_bad_input_as_a_readable_error(client):
    with pytest.raises(Exception, match="Nothing to fill"):
        client.predict("no masks here", api_name="/infill")
    with pytest.raises(Exception, match="not served here"):
        client.predict("a [MASK] b", model="someone/missing", api_name="/infill")
    with pytest.raises(Exception, match="not served here"):
        client.predict("a [MASK] b", model="/etc", api_name="/infill")


def test_the_run_endpoint_streams_and_does_not_wait_by_default(client):
    job = client.submit(TEXT, seed=1, api_name="/run")
    frames = list(job)  # every update the endpoint streamed
    assert len(frames) >= 2 and not frames[0]["done"] and frames[-1]["done"]
    last = frames[-1]
    assert len(last["stats"]) == 3 and all(s["done"] for s in last["stats"])
    # slow=0 by default: the run takes about its measured time, not a slowed-down replay
    assert job.status().success


def test_the_api_page_lists_only_the_public_endpoints_first(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert list(api["named_endpoints"]) == ["/infill", "/run"]
    run = {p["parameter_name"]: p for p in api["named_endpoints"]["/run"]["parameters"]}
    assert run["slow"]["parameter_default"] == 0


def test_request_bodies_are_capped(server):
    import httpx

    r = httpx.post(
        server.rstrip("/") + "/gradio_api/queue/join", content=b"x" * (200 * 1024), timeout=30
    )
    assert r.status_code == 413 and "too large" in r.text
    ok = httpx.post(server.rstrip("/") + "/gradio_api/queue/join", json={}, timeout=30)
    assert ok.status_code != 413


def test_concurrent_requests_share_the_model_safely(client):
    """Queued and concurrent runs on one cached model give the same results as one at a time."""
    text = "Once upon a time there was a [MASK:8] who lived in the [MASK:5]."
    kw = [dict(seed=s, sampler=m, k=3) for s in (0, 1) for m in ("assd", "one-call")]
    alone = [client.predict(text, api_name="/infill", **k)["text"] for k in kw]
    jobs = [client.submit(text, api_name="/infill", **k) for k in kw * 2]
    together = [j.result(timeout=120)["text"] for j in jobs]
    assert together == alone * 2


def test_the_page_serves_from_the_cache_it_is_given_even_while_that_cache_is_empty():
    # An empty ModelCache is falsy (it has a length): `cache or ModelCache()` once replaced the
    # app's cache with a default one, dropping --models, --compile and the calibration made at
    # start-up (the first run then loaded the model again and calibrated for 40 s).
    from demo.models import ModelCache
    from demo.ui import build

    cache = ModelCache(allowed=["code"], hub_reachable=lambda: False)
    assert len(cache) == 0
    build("prose", cache=cache)
    assert cache.choices == ["code", "prose"], "the page's default model joins *this* cache"
