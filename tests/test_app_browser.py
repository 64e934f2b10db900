"""End to end in a real headless Chromium: start ``python app.py``, run an example, check the page.

Needs Debian's ``chromium`` and the ``playwright`` Python package (never ``playwright install``).
Set ASSD_SCREENSHOT=path.png to keep the screenshot.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.browser

# Record every header counter the live panel shows ("round 1 · 2 calls · 5/8 tokens", ...).
WATCH_COUNTERS = """() => {
  window.__counters = [];
  new MutationObserver(() => {
    const c = document.querySelector('#panel-a .assd-count');
    if (c && window.__counters.at(-1) !== c.textContent) window.__counters.push(c.textContent);
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited early:\n{proc.stdout.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"app.py did not listen on port {port} within {timeout} s")


@pytest.fixture(scope="module")
def app_url(tiny_model_dir):
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.skip("chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    pytest.importorskip("gradio", reason="gradio is not installed")
    port = _free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--model", tiny_model_dir, "--host", "127.0.0.1",
         "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        _wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def page(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1300})
        pg.set_default_timeout(30_000)
        pg.goto(app_url)
        pg.wait_for_selector("#run")
        yield pg
        browser.close()


def test_example_runs_live_and_shows_statistics(page, tmp_path):
    page.locator("#ex-prose").get_by_text("The cat sat").first.click()
    textarea = page.locator("#input-text textarea")
    page.wait_for_function(
        "() => document.querySelector('#input-text textarea').value.includes('[HIDE]')"
    )
    assert textarea.input_value().startswith("The cat sat on the [HIDE]")
    delay = page.locator("#delay input[type=number]")
    delay.fill("0.5")  # slow motion, so that every round stays on screen for a while
    delay.press("Enter")
    page.evaluate(WATCH_COUNTERS)
    page.click("#run")
    page.wait_for_selector("#panel-a .assd-badge.done")
    seen = page.evaluate("() => window.__counters")
    assert any("round 1 " in c for c in seen), f"rounds were not streamed live: {seen}"
    assert page.locator("#panel-a .t-masked").count() == 0
    assert (
        page.locator("#panel-a .t-accepted, #panel-a .t-exact, #panel-a .t-resampled").count() > 0
    )
    stats = page.locator("#stats").inner_text()
    assert "network calls (NFE)" in stats and "fewer calls than sequential" in stats
    output = page.locator("#output .cm-content").inner_text()
    assert output.startswith("The cat sat on the") and "[MASK" not in output
    assert page.locator("#status .assd-msg").count() == 0
    shot = Path(os.environ.get("ASSD_SCREENSHOT") or tmp_path / "app.png")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_bad_input_shows_its_message(page):
    page.locator("#input-text textarea").fill("There is nothing masked here.")
    page.click("#run")
    msg = page.wait_for_selector("#status .assd-msg")
    assert "Nothing to fill" in msg.inner_text()
    page.locator("#input-text textarea").fill("[MASK:4]")
    page.click("#run")
    page.wait_for_selector("#status .assd-msg:has-text('Everything is masked')")


def test_mask_selection_replaces_the_selected_span(page):
    textarea = page.locator("#input-text textarea")
    textarea.fill("The cat sat on the mat. The dog sat on the log.")
    textarea.evaluate(
        "t => { t.focus(); t.setSelectionRange(8, 22); t.dispatchEvent(new Event('select')); }"
    )
    page.click("#mask-selection")
    page.wait_for_function(
        "() => document.querySelector('#input-text textarea').value.includes('[MASK:')"
    )
    assert textarea.input_value().startswith("The cat [MASK:")
    assert textarea.input_value().endswith(". The dog sat on the log.")
