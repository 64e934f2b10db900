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
from demo.inputs import build_infill, expand_hides, mask_selection
from demo.models import DemoError, ModelCache
from demo.render import Pieces, TokenView, message_html, tokens_html
from demo.run import Request, stream
from demo.stats import RunStats, rounds_plot, stats_html, summary_text


@pytest.fixture(scope="module")
def cache(tiny_model_dir):
    return ModelCache(maxsize=2, hub_reachable=lambda: False)


@pytest.fixture(scope="module")
def tok(cache, tiny_model_dir):
    return cache.get(tiny_model_dir).tokenizer


def n_tokens(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


# -- markup -> masks -----------------------------------------------------------------------------


def test_markup_masks_the_requested_number_of_tokens(tok):
    inf, hidden = build_infill("The cat [MASK:3] on the mat.", tok)
    assert inf.n_masked == 3 and hidden == []
    first = inf.mask.index(True)
    assert inf.mask[first : first + 3] == [True] * 3
    assert inf.ids[:first] == tok("The cat ", add_special_tokens=False)["input_ids"]


def test_hide_masks_the_span_with_its_token_count_and_keeps_the_original(tok):
    text, hidden = expand_hides("def add(a, b):\n    return [HIDE]a + b[/HIDE]\n", tok)
    assert hidden == ["a + b"]
    assert f"[MASK:{n_tokens(tok, 'a + b')}]" in text and "HIDE" not in text
    inf, _ = build_infill("x = [HIDE]1 + 2[/HIDE] and [HIDE]y[/HIDE]", tok)
    assert inf.n_masked == n_tokens(tok, "1 + 2") + n_tokens(tok, "y")


def test_mask_selection_keeps_the_token_count(tok):
    text = "The cat sat on the mat."
    start, end = text.index("sat on"), text.index(" the mat")
    out = mask_selection(text, end, start, tok)  # a backwards selection works too
    n = int(re.search(r"\[MASK:(\d+)\]", out).group(1))
    assert (
        n == n_tokens(tok, "sat on")
        and out.startswith("The cat [MASK:")
        and out.endswith(" the mat.")
    )
    with pytest.raises(DemoError, match="Select some text"):
        mask_selection(text, 3, 3, tok)


def test_random_masking_masks_about_the_rate_and_is_seeded(tok):
    text = "Once upon a time there was a little fox who lived in the forest."
    n = n_tokens(tok, text)
    a, _ = build_infill(text, tok, "random", 0.5, torch.Generator().manual_seed(1))
    b, _ = build_infill(text, tok, "random", 0.5, torch.Generator().manual_seed(1))
    assert a.mask == b.mask
    assert a.n_masked == n - (int(n * 0.5) + 1)  # the paper's count of visible tokens


def test_random_masking_keeps_explicit_masks(tok):
    inf, _ = build_infill(
        "The cat [MASK:4] on the mat.", tok, "random", 0.5, torch.Generator().manual_seed(0)
    )
    visible_before = n_tokens(tok, "The cat ") + n_tokens(tok, " on the mat.")
    assert inf.n_masked == 4 + visible_before - (int(visible_before * 0.5) + 1)


@pytest.mark.parametrize(
    "text, mode, match",
    [
        ("", "markup", "empty"),
        ("   \n ", "markup", "empty"),
        ("no masks in here", "markup", "Nothing to fill"),
        ("bad [MASK:x] markup", "markup", "Malformed"),
        ("bad [MASK:0] markup", "markup", "Malformed|no tokens"),
        ("[MASK:5]", "markup", "Everything is masked"),
        ("open [HIDE]never closed", "markup", "Unbalanced"),
        ("empty [HIDE][/HIDE] hide", "markup", "empty"),
        ("long [MASK:500] input", "markup", "at most 64"),
        ("some text", "sideways", "Unknown masking mode"),
    ],
)
def test_bad_input_gives_a_readable_message(tok, text, mode, match):
    with pytest.raises(DemoError, match=match):
        build_infill(text, tok, mode, 0.5, max_length=64)


# -- model cache ---------------------------------------------------------------------------------


class _Model:
    pass


def test_model_cache_is_an_lru_that_releases_evicted_models():
    loads = []

    def loader(name, revision=None):
        loads.append((name, revision))
        return assd.Loaded(_Model(), None, name, revision)

    cache = ModelCache(maxsize=2, loader=loader, hub_reachable=lambda: True)
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


def test_model_cache_reports_load_failures_as_messages(tiny_model_dir):
    def broken(name, revision=None):
        raise OSError("disk on fire")

    with pytest.raises(DemoError, match="disk on fire"):
        ModelCache(loader=broken).get("./somewhere")
    called = []
    offline = ModelCache(loader=lambda *a, **k: called.append(a), hub_reachable=lambda: False)
    with pytest.raises(DemoError, match="unreachable"):
        offline.get("therealgabeguo/ASARM", "nlp")
    assert not called, "an unreachable Hub must fail fast, without trying to download"
    with pytest.raises(DemoError, match="Choose a model"):
        offline.get("  ")
    with pytest.raises(DemoError, match="no model directory"):
        ModelCache().get("/no/such/dir")


# -- rendering -----------------------------------------------------------------------------------


def test_pieces_concatenate_to_the_decoded_text(tok):
    text = "def add(a, b):\n    return a + b\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    pieces = Pieces(tok)
    assert "".join(pieces(i) for i in ids) == text


def test_token_view_labels_how_each_token_was_obtained(tok):
    view = TokenView.from_infill([5, 2, 2, 2, 2, 6], [False, True, True, True, True, False])
    trace = RoundTrace(
        drafted=[1, 2, 3], accepted=[1, 2], resampled=3, exact=None,
        p_draft=[0.5, 0.4, 0.3], p_oracle=[0.5, 0.6, 0.1], tokens={1: 10, 2: 11, 3: 12}, calls=2,
    )  # fmt: skip
    view.apply([5, 10, 11, 12, 2, 6], trace, round=1)
    assert view.kind == ["prompt", "accepted", "accepted", "resampled", "masked", "prompt"]
    assert view.ids[1:4] == [10, 11, 12] and view.n_masked == 1
    last = RoundTrace([], [], None, 4, [], [], {4: 13}, 1)
    view.apply([5, 10, 11, 12, 13, 6], last, round=2)
    assert view.kind[4] == "exact" and view.round[4] == 2 and view.n_masked == 0
    html = tokens_html(view, Pieces(tok), latest=2)
    assert html.count("t-accepted") == 2 and html.count("t-resampled") == 1
    assert html.count("t-new") == 1 and "t-masked" not in html


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


@pytest.mark.parametrize("sampler", ["assd", "one-call", "sequential"])
def test_stream_reveals_every_mask_round_by_round(cache, tiny_model_dir, tok, sampler):
    frames = run(cache, tiny_model_dir, text=TEXT, sampler=sampler, k=3, seed=3)
    assert not any(f.error for f in frames)
    first, last = frames[0], frames[-1]
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
    assert s.done and s.generated == s.masked == 7
    assert 1 <= s.nfe <= 7 and sum(a + o for a, o in s.per_round) == 7
    assert s.tokens_per_call == pytest.approx(7 / s.nfe)
    if sampler == "sequential":
        assert s.nfe == s.rounds == 7 and math.isnan(s.acceptance_rate)
    elif sampler == "one-call":
        assert s.nfe == s.rounds
    else:
        assert 0 < s.acceptance_rate <= 1


def test_stream_is_reproducible_and_seed_dependent(cache, tiny_model_dir):
    kw = dict(text="The cat [MASK:12] log.", sampler="assd", k=4, temperature=1.0)
    a = run(cache, tiny_model_dir, seed=7, **kw)[-1].text
    b = run(cache, tiny_model_dir, seed=7, **kw)[-1].text
    others = {run(cache, tiny_model_dir, seed=s, **kw)[-1].text for s in (8, 9, 10)}
    assert a == b and others != {a}


def test_compare_mode_runs_both_on_the_same_input(cache, tiny_model_dir):
    frames = run(cache, tiny_model_dir, text=TEXT, sampler="compare", k=4, order="random")
    last = frames[-1]
    assert len(last.panels) == 2 and all("t-masked" not in p for p in last.panels)
    fast, seq = last.stats
    assert seq.sequential and seq.nfe == seq.masked == fast.masked
    assert fast.nfe <= fast.masked
    assert "Wall-clock speed-up" in summary_text(last.stats)
    assert all(len(f.panels) == 2 for f in frames)


def test_log_likelihood_is_the_exact_joint_of_the_shown_result(cache, tiny_model_dir):
    last = run(cache, tiny_model_dir, text=TEXT, log_likelihood=True, seed=1)[-1]
    ll = last.stats[0].log_likelihood
    assert ll is not None and math.isfinite(ll) and ll < 0
    lm = cache.get(tiny_model_dir)
    inf, _ = build_infill(TEXT, lm.tokenizer)
    batch = infills_to_batch([inf]).with_tokens(torch.tensor(last.tokens))
    assert ll == pytest.approx(float(assd.log_likelihood(lm.model, batch)[0]), abs=1e-6)
    assert decode(lm.tokenizer, last.tokens[0]) == last.text


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(text="no masks"), "Nothing to fill"),
        (dict(text=""), "empty"),
        (dict(text=TEXT, k=0), "k "),
        (dict(text=TEXT, temperature=0), "temperature"),
        (dict(text=TEXT, sampler="magic"), "Unknown sampler"),
        (dict(text=TEXT, order="sideways"), "Unknown decoding order"),
        (dict(text=TEXT, seed=-1), "seed"),
        (dict(text="[MASK:3]"), "Everything is masked"),
        (dict(text="x [MASK:90]"), "at most 64"),
    ],
)
def test_stream_turns_bad_input_into_one_error_frame(cache, tiny_model_dir, kw, match):
    frames = run(cache, tiny_model_dir, **kw)
    assert len(frames) == 1 and frames[0].error and frames[0].done
    assert re.search(match, frames[0].message)


def test_stream_reports_an_unknown_model(cache):
    frames = run(cache, "nobody/no-such-model", text=TEXT)
    assert len(frames) == 1 and frames[0].error and "unreachable" in frames[0].message


# -- statistics ----------------------------------------------------------------------------------


def test_stats_table_summary_and_plot():
    s = RunStats("ASSD (k=4)", masked=10, nfe=4, rounds=2, generated=10, drafted=9, accepted=8)
    s.per_round, s.done, s.wall_s = [(4, 1), (4, 1)], True, 0.5
    seq = RunStats("Sequential", masked=10, sequential=True, nfe=10, rounds=10, generated=10)
    seq.per_round, seq.done, seq.wall_s = [(0, 1)] * 10, True, 2.0
    html = stats_html([s, seq], hidden=["a + b"])
    assert "✓ 4 ≤ 10" in html and "89 %" in html and "2.50" in html and "a + b" in html
    text = summary_text([s, seq])
    assert "2.50x fewer calls" in text and "4.00x" in text
    fig = rounds_plot([s, seq])
    assert len(fig.axes[0].patches) == 4  # 2 rounds x (accepted, other)
    assert rounds_plot([seq]) is None


# -- app.py ----------------------------------------------------------------------------------------


def test_app_flags_and_env_choose_the_model_and_server(monkeypatch):
    pytest.importorskip("gradio")
    import app

    calls = {}
    monkeypatch.setattr(app, "build", lambda *a: calls.setdefault("build", a) and "blocks")
    monkeypatch.setattr(app, "launch", lambda *a, **kw: calls.setdefault("launch", (a, kw)))
    monkeypatch.setenv("ASSD_MODEL", "code")
    monkeypatch.delenv("ASSD_REVISION", raising=False)
    app.main(["--port", "7999", "--host", "127.0.0.1", "--cache-size", "3"])
    model, revision, cache = calls["build"]
    assert (model, revision, cache.maxsize) == ("code", None, 3)
    (_, concurrency), kw = calls["launch"]
    assert kw == {"server_name": "127.0.0.1", "server_port": 7999, "share": False}
    calls.clear()
    app.main(["--model", "therealgabeguo/ASARM", "--revision", "nlp", "--share"])
    assert calls["build"][:2] == ("therealgabeguo/ASARM", "nlp") and calls["launch"][1]["share"]


def test_examples_switch_between_embedded_models_only():
    pytest.importorskip("gradio")
    from demo.ui import suggest_model

    assert suggest_model("code", "prose") == "code" and suggest_model("prose", "code") == "prose"
    assert suggest_model("code", "/my/model") == "/my/model"
    assert suggest_model("code", "therealgabeguo/ASARM") == "therealgabeguo/ASARM"


@pytest.mark.parametrize("name, example", [("prose", 0), ("code", 0)])
def test_the_embedded_models_fill_their_examples(name, example):
    """The default app works offline: each embedded model completes its own examples."""
    from demo import examples
    from demo.models import EMBEDDED

    assert name in EMBEDDED
    cache = ModelCache(maxsize=1, hub_reachable=lambda: False)
    try:
        cache.get(name)
    except DemoError as e:
        if "not installed" in str(e):
            pytest.skip(f"the embedded {name} model is not installed yet")
        raise
    text, mode, rate = (examples.PROSE if name == "prose" else examples.CODE)[example]
    last = run(cache, name, text=text, mask_mode=mode, rate=rate / 100, sampler="one-call")[-1]
    assert not last.error, last.message
    assert last.done and last.stats[0].generated == last.stats[0].masked > 0
    assert "[MASK" not in last.text and "[HIDE" not in last.text
