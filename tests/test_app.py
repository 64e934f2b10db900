"""The demo's logic without a browser: input parsing, model cache, rendering, streaming, stats."""

from __future__ import annotations

import gc
import math
import re
import weakref

import pytest
import torch

import assd
from assd import RoundTrace
from assd.text import decode, infills_to_batch
from demo import run as run_module
from demo.inputs import build_infill, hide_selection
from demo.models import DemoError, ModelCache, parse_spec
from demo.render import PENDING, Pieces, TokenView, message_html, tokens_html
from demo.run import Request, stream
from demo.stats import RunStats, progress_plot, speed_sentence, stats_html, summary_lines, times


@pytest.fixture(scope="module")
def cache(tiny_model_dir):
    return ModelCache(maxsize=2, hub_reachable=lambda: False, allowed=[tiny_model_dir])


@pytest.fixture(scope="module")
def tok(cache, tiny_model_dir):
    return cache.get(tiny_model_dir).tokenizer


def n_tokens(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


# -- input -> masks: the library's markup, the demo's random masking and "Mask selection" ---------


def test_markup_masks_the_requested_number_of_tokens(tok):
    inf = build_infill("The cat [MASK:3] on the mat.", tok)
    assert inf.n_masked == 3 and inf.hidden == []
    first = inf.mask.index(True)
    assert inf.mask[first : first + 3] == [True] * 3
    assert inf.ids[:first] == tok("The cat", add_special_tokens=False)["input_ids"]


def test_hide_is_the_librarys_and_keeps_the_original(tok):
    inf = build_infill("def add(a, b):\n    return [HIDE]a + b[/HIDE]\n", tok)
    assert inf.hidden == ["a + b"] and inf.n_masked == n_tokens(tok, " a + b")


def test_mask_selection_wraps_the_selection_in_hide_keeping_spaces_outside():
    text = "The cat sat on the mat. The dog sat on the log."
    start, end = text.index(" sat on the mat"), text.index(" The dog")
    out = hide_selection(text, end, start)  # a backwards selection works too
    assert out == "The cat [HIDE]sat on the mat.[/HIDE] The dog sat on the log."
    for bad, match in [((3, 3), "Select some text"), ((3, 4), "whitespace")]:
        with pytest.raises(DemoError, match=match):
            hide_selection(text, *bad)
    with pytest.raises(DemoError, match="already contains markup"):
        hide_selection(out, 0, len(out))


def test_random_masking_masks_about_the_rate_and_is_seeded(tok):
    text = "Once upon a time there was a little fox who lived in the forest."
    n = n_tokens(tok, text)
    a = build_infill(text, tok, "random", 0.5, torch.Generator().manual_seed(1))
    b = build_infill(text, tok, "random", 0.5, torch.Generator().manual_seed(1))
    assert a.mask == b.mask
    assert a.n_masked == n - (int(n * 0.5) + 1)  # the paper's count of visible tokens


def test_random_masking_keeps_explicit_masks(tok):
    inf = build_infill(
        "The cat [MASK:4] on the mat.", tok, "random", 0.5, torch.Generator().manual_seed(0)
    )
    visible_before = n_tokens(tok, "The cat") + n_tokens(tok, " on the mat.")
    assert inf.n_masked == 4 + visible_before - (int(visible_before * 0.5) + 1)


@pytest.mark.parametrize(
    "text, mode, match",
    [
        ("", "markup", "empty"),
        ("   \n ", "markup", "empty"),
        ("no masks in here", "markup", "Nothing to fill: mark a span"),
        ("bad [MASK:x] markup", "markup", "Malformed"),
        ("bad [MASK:0] markup", "markup", "no tokens"),
        ("full-width [MASK:２] digits", "markup", "ASCII digits"),
        ("[MASK:5]", "markup", "Everything is masked"),
        ("open [HIDE]never closed", "markup", "Unbalanced"),
        ("empty [HIDE][/HIDE] hide", "markup", "empty"),
        ("long [MASK:500] input", "markup", "at most 64"),
        ("[MASK:100000]" * 1000, "markup", "too long"),
        ("some text", "sideways", "Unknown masking mode"),
    ],
)
def test_bad_input_gives_a_readable_message(tok, text, mode, match):
    with pytest.raises(DemoError, match=match):
        build_infill(text, tok, mode, 0.5, max_length=64)


# -- model cache: an allow-list, loaded once ------------------------------------------------------


class _Model:
    pass


def test_model_cache_is_an_lru_that_releases_evicted_models():
    loads = []

    def loader(name, revision=None):
        loads.append((name, revision))
        return assd.Loaded(_Model(), None, name, revision)

    cache = ModelCache(maxsize=2, loader=loader, hub_reachable=lambda: True, allow_any=True)
    a = weakref.ref(cache.get("./a").model)
    cache.get("./b")
    assert cache.get("./a").model is a()  # cached: not loaded again
    cache.get("./c")  # evicts b, the least recently used
    assert cache.keys() == [("./a", None), ("./c", None)]
    assert loads == [("./a", None), ("./b", None), ("./c", None)]
    cache.get("./d")  # evicts a
    gc.collect()
    assert a() is None, "an evicted model must not stay alive"
    assert len(cache) == 2


def test_only_the_allowed_models_are_served():
    loads = []
    cache = ModelCache(
        loader=lambda name, revision=None: (
            loads.append((name, revision)) or assd.Loaded(_Model(), None, name, revision)
        ),
        hub_reachable=lambda: True,
        allowed=["prose", "owner/model@v1"],
    )
    assert cache.choices == ["prose", "owner/model@v1"]
    cache.get("owner/model@v1")
    cache.get("owner/model", "v1")  # the same model, the revision given apart
    for name, revision in [
        ("/etc", None),
        ("owner/model", None),
        ("owner/model", "v2"),
        ("other/model", None),
        ("../secret", None),
    ]:
        with pytest.raises(DemoError, match="is not served here: choose one of prose, owner/"):
            cache.get(name, revision)
    assert loads == [("owner/model", "v1")], "a refused model must never reach the loader"
    assert parse_spec("code@nlp") == ("code", None)  # embedded models have no revision


def test_a_calibrating_cache_measures_fastest_in_the_background_as_a_model_loads(monkeypatch):
    from assd.backends.toy import ToyASARM
    from assd.samplers import auto

    calls = []

    def fake_calibrate(model, temperature=1.0, cancel=None):
        calls.append((model, temperature))
        return [{"sampler": assd.Sequential(temperature), "seconds_per_token": 1.0, "runs": [1.0]}]

    monkeypatch.setattr(auto, "calibrate", fake_calibrate)
    toy = ToyASARM(4, 12, seed=3)
    cache = ModelCache(
        loader=lambda name, revision=None: assd.Loaded(toy, None, name, revision),
        hub_reachable=lambda: True,
        allow_any=True,
        calibrate=True,
    )
    cache.get("./a")
    cache.calibration(toy).join(timeout=30)
    assert not cache.calibrating(toy)
    assert calls == [(toy, 1.0)], "calibrated once, at load, at the page's default temperature"
    assd.fastest(toy, speculative=True)  # a visitor's first run: the result is already there
    assert len(calls) == 1
    assert not ModelCache(loader=lambda *a: None).calibrate, "off unless asked for"


def test_a_model_dropped_from_the_cache_stops_its_calibration_and_is_freed(monkeypatch):
    """Evicting a model mid-calibration must not keep it alive until the measurement ends."""
    import weakref

    from assd.backends.toy import ToyASARM
    from assd.samplers import auto

    started = []

    def endless_calibrate(model, temperature=1.0, cancel=None):
        started.append(model)
        assert cancel is not None and cancel.wait(30), "the cache never cancelled it"
        raise auto.CalibrationCancelled("cancelled")

    monkeypatch.setattr(auto, "calibrate", endless_calibrate)
    toys = {"./a": ToyASARM(4, 12, seed=5), "./b": ToyASARM(4, 12, seed=6)}
    cache = ModelCache(
        loader=lambda name, revision=None: assd.Loaded(toys[name], None, name, revision),
        hub_reachable=lambda: True,
        allow_any=True,
        calibrate=True,
        maxsize=1,
    )
    cache.get("./a")
    first = cache.calibration(toys["./a"])
    assert first.is_alive()
    gone = weakref.ref(toys.pop("./a"))
    cache.get("./b")  # evicts ./a
    first.join(timeout=10)
    assert not first.is_alive(), "the evicted model's calibration went on"
    started.clear()
    assert gone() is None, "the evicted model is still in memory after its calibration stopped"
    assert assd.fastest(toys["./b"], wait=False) is None
    second = cache.calibration(toys["./b"])
    cache.clear()  # stops the rest too
    second.join(timeout=10)
    assert not second.is_alive()
    # a run still holding the dropped model gets the provisional form, never a measurement
    assert cache.calibrating(toys["./b"])


def test_a_run_during_the_calibration_is_served_at_once_with_a_provisional_form(monkeypatch):
    from assd.backends.toy import ToyASARM
    from assd.samplers import auto

    toy = ToyASARM(4, 12, seed=4, draft_head=True)
    assert assd.fastest(toy, wait=False) is None, "nothing measured: no answer, no measuring"
    s, title, kind = run_module.exact_sampler("fastest", toy, 5, 1.0, wait=False)
    assert s == assd.ASSD(k=2, draft="head") and "still being measured" in title
    plain = ToyASARM(4, 12, seed=4)
    assert run_module.exact_sampler("fastest", plain, 5, 0.8, wait=False)[0] == assd.ASSD(
        k=5, temperature=0.8, bonus=True
    )
    fake = [{"sampler": assd.ASSD(3, one_call=True), "seconds_per_token": 1.0, "runs": [1.0]}]
    monkeypatch.setattr(auto, "calibrate", lambda m, temperature=1.0, **kw: fake)
    assert assd.fastest(toy) == assd.ASSD(3, one_call=True)  # measured (here: faked) ...
    s, title, _ = run_module.exact_sampler("fastest", toy, 5, 1.0, wait=False)
    assert s == assd.ASSD(3, one_call=True) and title.startswith("fastest ASSD")  # ... then used
    # Another temperature is never measured inside a request: the form measured at 1.0 is used
    monkeypatch.setattr(auto, "calibrate", lambda m, temperature=1.0, **kw: pytest.fail("measured"))
    s, title, _ = run_module.exact_sampler("fastest", toy, 5, 0.8, wait=True)
    assert s == assd.ASSD(3, one_call=True, temperature=0.8) and "temperature 1" in title


def test_model_cache_reports_load_failures_as_messages():
    def broken(name, revision=None):
        raise OSError("disk on fire")

    with pytest.raises(DemoError, match="disk on fire"):
        ModelCache(loader=broken, allow_any=True).get("./somewhere")
    called = []
    offline = ModelCache(
        loader=lambda *a, **k: called.append(a), hub_reachable=lambda: False, allow_any=True
    )
    with pytest.raises(DemoError, match="unreachable"):
        offline.get("therealgabeguo/ASARM", "nlp")
    assert not called, "an unreachable Hub must fail fast, without trying to download"
    with pytest.raises(DemoError, match="Choose a model"):
        offline.get("  ")
    with pytest.raises(DemoError, match="no model directory"):
        ModelCache(allow_any=True).get("/no/such/dir")


# -- rendering -----------------------------------------------------------------------------------


def test_pieces_concatenate_to_the_decoded_text(tok):
    text = "def add(a, b):\n    return a + b\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    pieces = Pieces(tok)
    assert "".join(pieces(i) for i in ids) == text
    assert "".join(pieces.texts(ids, [True] * len(ids))) == text


def test_non_ascii_is_decoded_on_character_boundaries(tok):
    text = "Café € 日本 naïve"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text.split()), "the byte-level tokenizer splits these characters"
    pieces = Pieces(tok)
    assert any("\ufffd" in pieces(i) for i in ids), "one token at a time garbles them"
    shown = pieces.texts(ids, [True] * len(ids))
    assert "".join(shown) == text and not any("\ufffd" in s for s in shown)
    # A character whose next byte is still masked is pending, not garbled.
    euro = next(i for i, s in enumerate(shown) if "€" in s)
    partial = pieces.texts(ids, [i != euro for i in range(len(ids))])
    assert partial[euro] is None and "\ufffd" not in "".join(s or "" for s in partial)
    assert PENDING in partial[:euro]


def test_token_view_labels_how_each_token_was_obtained(tok):
    view = TokenView.from_infill([5, 2, 2, 2, 2, 6], [False, True, True, True, True, False])
    trace = RoundTrace(
        drafted=[1, 2, 3],
        accepted=[1, 2],
        resampled=3,
        exact=None,
        p_draft=[0.5, 0.4, 0.3],
        p_oracle=[0.5, 0.6, 0.1],
        tokens={1: 10, 2: 11, 3: 12},
        calls=2,
    )
    view.apply([5, 10, 11, 12, 2, 6], trace, round=1)
    assert view.kind == ["prompt", "accepted", "accepted", "resampled", "masked", "prompt"]
    assert view.ids[1:4] == [10, 11, 12] and view.n_masked == 1
    last = RoundTrace([], [], None, 4, [], [], {4: 13}, 1)
    view.apply([5, 10, 11, 12, 13, 6], last, round=2)
    assert view.kind[4] == "exact" and view.round[4] == 2 and view.n_masked == 0
    html = tokens_html(view, Pieces(tok), latest=2)
    assert html.count("t-accepted") == 2 and html.count("t-resampled") == 1
    assert html.count("t-new") == 1 and "t-masked" not in html
    loose = TokenView.from_infill([5, 2, 2], [False, True, True])
    both = RoundTrace([1, 2], [1, 2], None, None, [0.2, 0.3], [0.2, 0.3], {1: 7, 2: 8}, 1)
    loose.apply([5, 7, 8], both, round=1, lane="unverified")
    assert loose.kind == ["prompt", "unverified", "unverified"]


def test_html_escapes_the_text(tok):
    ids = tok("<script>x</script>", add_special_tokens=False)["input_ids"]
    view = TokenView.from_infill(ids + [2], [False] * len(ids) + [True])
    html = tokens_html(view, Pieces(tok))
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert html.count('class="t t-masked"') == 1
    assert "<b>" not in message_html("<b>bold</b>")


# -- streaming -----------------------------------------------------------------------------------


def run(cache, model, **kw):
    return list(stream(cache, Request(model=model, **kw)))


TEXT = "The cat sat on the [MASK:7] The dog sat on the log."


@pytest.mark.parametrize("sampler", ["fastest", "assd", "one-call", "sequential"])
def test_one_lane_reveals_every_mask_live(cache, tiny_model_dir, sampler, monkeypatch):
    monkeypatch.setattr(run_module, "FRAME_S", 0.0)  # a frame for every round
    frames = run(cache, tiny_model_dir, text=TEXT, sampler=sampler, k=3, seed=3, compare=False)
    assert not any(f.error for f in frames)
    first, last = frames[0], frames[-1]
    assert len(last.panels) == 1
    assert first.panels[0].count('class="t t-masked"') == 7 and first.stats[0].rounds == 0
    rounds = [f.stats[0].rounds for f in frames[1:-1]]
    assert rounds == list(range(1, len(rounds) + 1)), "one frame per round, streamed live"
    gen = [f.stats[0].generated for f in frames]
    assert gen == sorted(gen) and gen[-1] == 7
    assert last.done and "t-masked" not in last.panels[0] and "[MASK" not in last.text
    assert last.text.startswith("The cat sat on the") and last.text.endswith(
        " The dog sat on the log."
    )
    s = last.stats[0]
    assert s.done and s.generated == s.masked == 7 and s.wall_s > 0
    assert 1 <= s.nfe <= 7 and s.history[-1] == (s.wall_s, s.nfe, 7)
    assert s.tokens_per_call == pytest.approx(7 / s.nfe)
    if sampler == "sequential":
        assert s.nfe == s.rounds == 7 and math.isnan(s.acceptance_rate)
    elif sampler == "one-call":
        assert s.nfe == s.rounds


def test_three_lanes_run_on_the_same_input(cache, tiny_model_dir):
    frames = run(cache, tiny_model_dir, text=TEXT, k=4, unverified_k=3, seed=5)
    last = frames[-1]
    assert len(last.panels) == 3 and all(len(f.panels) == 3 for f in frames)
    fast, seq, loose = last.stats
    assert (fast.lane, seq.lane, loose.lane) == ("assd", "sequential", "unverified")
    assert all(s.done and s.generated == s.masked == 7 for s in last.stats)
    assert seq.nfe == 7 and loose.nfe == math.ceil(7 / 3) and fast.nfe <= 7
    assert [s.exact for s in last.stats] == [True, True, False]
    assert all(t.startswith("The cat sat on the") for t in last.texts)
    assert last.text == last.texts[0]
    lines = summary_lines(last.stats)
    assert any("fewer calls than sequential" in x or "as many calls" in x for x in lines)
    assert any("the speed of sequential on this input" in x for x in lines)
    assert any("without checking them" in x and "log-likelihood" in x for x in lines)


def test_the_replay_shows_rounds_in_measured_time(cache, tiny_model_dir, monkeypatch):
    """Across lanes, rounds appear in the order of each lane's own measured wall-clock, so
    the lane that finishes first on the page is the one that took the least time."""
    monkeypatch.setattr(run_module, "FRAME_S", 0.0)
    frames = run(cache, tiny_model_dir, text=TEXT, k=2, seed=1, slow=1.0)
    shown = []  # (lane, its wall-clock) for every round, in the order the page showed them
    for prev, cur in zip(frames, frames[1:]):  # the last lane's last round: in the final frame
        changed = [i for i, (a, b) in enumerate(zip(prev.stats, cur.stats)) if a.rounds != b.rounds]
        assert len(changed) <= 1, "a frame shows one new round"
        shown += [(i, cur.stats[i].wall_s) for i in changed]
    times_ = [t for _, t in shown]
    assert times_ == sorted(times_)
    finish = sorted(range(3), key=lambda i: max(t for j, t in shown if j == i))
    assert finish == sorted(range(3), key=lambda i: frames[-1].stats[i].wall_s)


def test_slow_motion_stretches_the_replay(cache, tiny_model_dir):
    import time

    t0 = time.perf_counter()
    last = run(cache, tiny_model_dir, text=TEXT, k=3, seed=2, compare=False, slow=20)[-1]
    elapsed = time.perf_counter() - t0
    assert elapsed >= 20 * last.stats[0].wall_s * 0.95


def test_closing_the_stream_mid_run_ends_it_cleanly(cache, tiny_model_dir):
    frames = stream(cache, Request(text=TEXT, model=tiny_model_dir, slow=50, seed=0))
    first = next(frames)
    assert not first.done
    frames.close()  # what Gradio does on Stop
    again = run(cache, tiny_model_dir, text=TEXT, seed=0)[-1]
    assert again.done and not again.error


def test_stream_is_reproducible_and_seed_dependent(cache, tiny_model_dir):
    kw = dict(text="The cat [MASK:12] log.", sampler="assd", k=4, compare=False)
    a = run(cache, tiny_model_dir, seed=7, **kw)[-1].text
    b = run(cache, tiny_model_dir, seed=7, **kw)[-1].text
    others = {run(cache, tiny_model_dir, seed=s, **kw)[-1].text for s in (8, 9, 10)}
    assert a == b and others != {a}


def test_log_likelihood_is_the_exact_joint_of_the_shown_result(cache, tiny_model_dir):
    last = run(cache, tiny_model_dir, text=TEXT, seed=1, order="left-to-right")[-1]
    lm = cache.get(tiny_model_dir)
    inf = build_infill(TEXT, lm.tokenizer)
    for s, tokens in zip(last.stats, last.tokens):
        assert s.log_likelihood is not None and s.log_likelihood < 0
        batch = infills_to_batch([inf]).with_tokens(torch.tensor([tokens]))
        want = float(assd.log_likelihood(lm.model, batch)[0])
        assert s.log_likelihood == pytest.approx(want, abs=1e-6)
    assert decode(lm.tokenizer, last.tokens[0]) == last.text


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(text="no masks"), "Nothing to fill"),
        (dict(text=""), "empty"),
        (dict(text=TEXT, k=0), "k "),
        (dict(text=TEXT, unverified_k=1), "tokens per call"),
        (dict(text=TEXT, temperature=0), "temperature"),
        (dict(text=TEXT, sampler="magic"), "Unknown sampler"),
        (dict(text=TEXT, order="sideways"), "Unknown decoding order"),
        (dict(text=TEXT, seed=-1), "seed"),
        (dict(text=TEXT, seed=10**30), "seed"),
        (dict(text=TEXT, slow=1000), "slow-motion"),
        (dict(text="[MASK:3]"), "Everything is masked"),
        (dict(text="x [MASK:90]"), "at most 64"),
    ],
)
def test_stream_turns_bad_input_into_one_error_frame(cache, tiny_model_dir, kw, match):
    frames = run(cache, tiny_model_dir, **kw)
    assert len(frames) == 1 and frames[0].error and frames[0].done
    assert re.search(match, frames[0].message)


def test_stream_reports_a_model_that_is_not_served(cache):
    frames = run(cache, "nobody/no-such-model", text=TEXT)
    assert len(frames) == 1 and frames[0].error and "not served here" in frames[0].message


# -- statistics ----------------------------------------------------------------------------------


def _stats(lane, nfe, wall, ll=None, k=None, masked=10):
    s = RunStats(lane, masked=masked, lane=lane, k=k, nfe=nfe, rounds=nfe, generated=masked)
    s.done, s.wall_s, s.log_likelihood = True, wall, ll
    s.history = [(wall, nfe, masked)]
    return s


def test_ratios_read_naturally():
    assert [times(x) for x in (2.4, 1.1449, 0.82, 10.04)] == ["2.4x", "1.14x", "0.82x", "10.0x"]


def test_summary_tells_calls_speed_and_why():
    fast, seq = _stats("assd", 4, 0.5, -20.0), _stats("sequential", 10, 0.4, -19.0)
    loose = _stats("unverified", 3, 0.1, -35.0)
    lines = summary_lines([fast, seq, loose])
    assert (
        lines[0]
        == "assd: 10 tokens in 4 network calls, 2.5x fewer calls than sequential decoding (10 calls)."
    )
    assert lines[1].startswith(
        "0.80x the speed of sequential on this input (0.500 s vs 0.400 s): slower here"
    )
    assert "2.5x fewer calls" in lines[1] and "costs 3.1x a sequential call" in lines[1]
    assert "15.0 nats lower" in lines[2] and "about 10^7 times less likely" in lines[2]
    quick = speed_sentence(_stats("assd", 4, 0.2), seq)
    assert quick.startswith("2.0x the speed") and "faster, because" in quick
    html = stats_html([fast, seq, loose], hidden=["a + b"])
    assert "✓ 4 ≤ 10" in html and "a + b" in html and "-35.0" in html


def test_a_setting_that_breaks_the_bound_says_so():
    bad = _stats("assd", 19, 0.5, k=1)
    lines = summary_lines([bad])
    assert "1.90x more calls than sequential" in lines[0]
    assert "with k = 1" in lines[1]
    assert "✗ 19 &gt; 10" in stats_html([bad]) or "✗ 19 > 10" in stats_html([bad])


def test_plot_colours_are_the_lanes():
    lanes = [_stats("assd", 4, 0.5), _stats("sequential", 10, 0.4), _stats("unverified", 3, 0.1)]
    fig = progress_plot(lanes)
    colours = [line.get_color() for line in fig.axes[0].get_lines()]
    assert colours == [s.colour for s in lanes] and len(set(colours)) == 3
    assert progress_plot([RunStats("x", 3)]) is None


# -- app.py ----------------------------------------------------------------------------------------


def test_app_flags_and_env_choose_the_models_and_server(monkeypatch):
    pytest.importorskip("gradio")
    import app

    calls = {}
    threads = []
    monkeypatch.setattr(app.torch, "set_num_threads", threads.append)
    monkeypatch.setattr(app, "build", lambda *a: calls.setdefault("build", a) and "blocks")
    monkeypatch.setattr(app, "launch", lambda *a, **kw: calls.setdefault("launch", (a, kw)))
    monkeypatch.setenv("ASSD_MODEL", "code")
    monkeypatch.setenv("ASSD_MODELS", "prose,owner/model@v2")
    monkeypatch.delenv("ASSD_REVISION", raising=False)
    monkeypatch.delenv("ASSD_ALLOW_ANY_MODEL", raising=False)
    app.main(["--port", "7999", "--host", "127.0.0.1", "--cache-size", "3", "--no-preload"])
    model, revision, cache = calls["build"]
    assert (model, revision, cache.maxsize, cache.allow_any) == ("code", None, 3, False)
    assert cache.allowed == [("prose", None), ("owner/model", "v2")]
    (_, concurrency), kw = calls["launch"]
    assert kw == {
        "max_body": 64 * 1024,
        "server_name": "127.0.0.1",
        "server_port": 7999,
        "share": False,
    }
    assert calls["build"][2].loader is assd.load  # rounds not compiled unless asked
    calls.clear()
    app.main(["--model", "therealgabeguo/ASARM@nlp", "--allow-any-model", "--no-preload"])
    assert calls["build"][:2] == ("therealgabeguo/ASARM", "nlp") and calls["build"][2].allow_any
    calls.clear()
    monkeypatch.setenv("ASSD_COMPILE", "1")
    app.main(["--no-preload"])
    assert calls["build"][2].loader.keywords == {"compile": True}
    # Torch threads: the cores shared among the concurrent runs, unless --threads says.
    assert threads == [app.cpu_threads(2)] * 3
    monkeypatch.setattr(app.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert (app.cpu_threads(2), app.cpu_threads(1), app.cpu_threads(8)) == (2, 4, 1)
    app.main(["--no-preload", "--threads", "3"])
    assert threads[-1] == 3
    with pytest.raises(SystemExit):
        app.main(["--no-preload", "--threads", "0"])


def test_examples_switch_between_embedded_models_only():
    pytest.importorskip("gradio")
    from demo.ui import suggest_model

    served = ["prose", "code", "/my/model"]
    assert suggest_model("code", "prose", served) == "code"
    assert suggest_model("prose", "code", served) == "prose"
    assert suggest_model("code", "/my/model", served) == "/my/model"
    assert suggest_model("code", "prose", ["prose"]) == "prose"  # code is not served


@pytest.mark.slow
@pytest.mark.parametrize("name", ["prose", "code"])
def test_the_embedded_models_fill_their_examples(name):
    """The default app works offline: each embedded model completes its own examples."""
    from demo.examples import EXAMPLES

    cache = ModelCache(maxsize=1, hub_reachable=lambda: False)
    for ex in [e for e in EXAMPLES if e.model == name][:2]:
        last = run(cache, name, text=ex.text, mask_mode=ex.mode, rate=ex.rate / 100)[-1]
        assert not last.error, last.message
        assert all(s.done and s.generated == s.masked > 0 for s in last.stats)
        assert "[MASK" not in last.text and "[HIDE" not in last.text


def test_a_run_while_its_model_calibrates_gets_a_provisional_form_at_once(
    cache, tiny_model_dir, monkeypatch
):
    from assd.samplers import auto

    def no_calibration(*a, **k):
        raise AssertionError("a run must not calibrate while a background calibration runs")

    lm = cache.get(tiny_model_dir)
    monkeypatch.setattr(auto, "calibrate", no_calibration)
    monkeypatch.setattr(auto, "_CACHE", type(auto._CACHE)())  # nothing measured yet
    monkeypatch.setattr(cache, "calibrating", lambda model: model is lm.model)
    frames = run(cache, tiny_model_dir, text=TEXT, sampler="fastest", compare=False)
    assert not frames[-1].error, frames[-1].message
    assert "still being measured" in frames[-1].stats[0].name
