"""The mask markup grammar (assd.text): fixed cases, properties over any string, memory bounds."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assd.text import MAX_TOKENS, Infill, MarkupError, decode, mask_span, parse_markup

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def n_tokens(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


def visible_text(tok, inf: Infill) -> str:
    return decode(tok, [t for t, m in zip(inf.ids, inf.mask) if not m])


# -- fixed cases -----------------------------------------------------------------------------------


def test_hide_masks_the_span_with_its_token_count_and_keeps_the_original(tok):
    inf = parse_markup("x = [HIDE]1 + 2[/HIDE] and [HIDE]y[/HIDE]!", tok)
    assert inf.hidden == ["1 + 2", "y"]
    # the space before each span belongs to it (as " 1", " +", " 2" would be tokenized in place)
    assert inf.n_masked == n_tokens(tok, " 1 + 2") + n_tokens(tok, " y")
    assert visible_text(tok, inf) == "x = and!"


def test_a_space_before_a_mask_belongs_to_the_masked_span(tok):
    """'the [MASK:2]' must not leave a lone ' ' token: the model would write a second space."""
    inf = parse_markup("The cat sat on the [MASK:2] the log.", tok)
    first = inf.mask.index(True)
    assert inf.ids[:first] == tok("The cat sat on the", add_special_tokens=False)["input_ids"]
    assert inf.ids[first + 2 :] == tok(" the log.", add_special_tokens=False)["input_ids"]
    no_space = parse_markup("a\n[MASK:2]\nb", tok)  # only a plain space is moved
    assert visible_text(tok, no_space) == "a\n\nb"


def test_escapes_give_literal_markup(tok):
    inf = parse_markup("a [MASK] b \\[MASK] c \\[HIDE] d \\[/HIDE] e", tok)
    assert inf.n_masked == 1 and inf.hidden == []
    assert visible_text(tok, inf) == "a b [MASK] c [HIDE] d [/HIDE] e"


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty"),
        (" \n\t", "empty"),
        ("no markup here", "nothing to fill"),
        ("[MASKED] is not markup", "nothing to fill"),
        ("bad [MASK:] markup", "malformed .* line 1, column 5"),
        ("bad [MASK:x] markup", "malformed"),
        ("bad [MASK:3 markup", "malformed"),
        ("line one\nbad [MASK", "line 2, column 5"),
        ("zero [MASK:0] tokens", "n >= 1"),
        ("full-width [MASK:２] digits", "ASCII digits"),
        ("mixed [MASK:1２] digits", "ASCII digits"),
        ("arabic [MASK:٣] digits", "ASCII digits"),
        ("open [HIDE]never closed", "unbalanced \\[HIDE\\]"),
        ("close [/HIDE] only", "no matching \\[HIDE\\]"),
        ("empty [HIDE][/HIDE] span", "empty \\[HIDE\\]"),
        ("nested [HIDE]a [HIDE]b[/HIDE][/HIDE]", "inside a \\[HIDE\\]"),
        ("a [HIDE]mask [MASK] inside[/HIDE]", "inside a \\[HIDE\\]"),
        ("bad [HIDE x]", "malformed"),
        ("huge [MASK:99999999999999999999] count", "too long"),
        ("x [MASK:300]", "too long: more than 64 tokens"),
    ],
)
def test_markup_errors_say_what_and_where(tok, text, match):
    with pytest.raises(MarkupError, match=match):
        parse_markup(text, tok, max_length=64)


def test_max_length_is_checked(tok):
    assert len(parse_markup("x [MASK:63]", tok, max_length=64).ids) == 64
    with pytest.raises(MarkupError, match="too long"):
        parse_markup("x [MASK:64]", tok, max_length=64)
    with pytest.raises(TypeError, match="max_length"):
        parse_markup("x [MASK]", tok, max_length=2.5)
    with pytest.raises(ValueError, match="max_length must be >= 1"):
        parse_markup("x [MASK]", tok, max_length=0)
    with pytest.raises(MarkupError, match=f"at most {MAX_TOKENS}"):
        parse_markup(f"x [MASK:{MAX_TOKENS}]", tok)  # no max_length: the library's own cap


def test_mask_span_counts_the_span_as_the_parser_will(tok):
    text = "The cat sat on the mat."
    out = mask_span(tok, text, 4, 11)
    assert out == f"The [MASK:{n_tokens(tok, ' cat sat')}] on the mat."
    assert (
        parse_markup(out, tok).n_masked == parse_markup("The [HIDE]cat sat[/HIDE] on", tok).n_masked
    )


def test_mask_random_masks_the_papers_count_of_visible_tokens(tok):
    import torch

    inf = parse_markup("The cat [MASK:4] on the mat, and the dog sat on the log.", tok)
    visible = len(inf.ids) - 4
    out = inf.mask_random(0.5, torch.Generator().manual_seed(0))
    assert out.n_masked == 4 + visible - (int(visible * 0.5) + 1)
    assert all(out.mask[i] for i, m in enumerate(inf.mask) if m), "explicit masks stay masked"
    again = inf.mask_random(0.5, torch.Generator().manual_seed(0))
    assert again.mask == out.mask
    with pytest.raises(ValueError, match="rate must lie in"):
        inf.mask_random(0.0)


# -- properties over any string ------------------------------------------------------------------

PIECES = st.sampled_from(
    [
        "[MASK]",
        "[MASK:",
        "]",
        "[HIDE]",
        "[/HIDE]",
        "\\",
        "[MASK:3]",
        "[MASK:100000]",
        "[",
        ":",
        "２",
        "0",
        "9",
        " ",
        "a",
        "é",
        "€",
        "\n",
        "[MASK",
        "[HIDE",
        "[/HIDE",
        "MASK",
        "\\[MASK]",
    ]
)
MARKUPISH = st.one_of(st.text(max_size=60), st.lists(PIECES, max_size=25).map("".join))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MARKUPISH)
def test_any_string_parses_or_gives_a_markup_error(tok, text):
    try:
        inf = parse_markup(text, tok, max_length=64)
    except MarkupError as e:
        assert str(e) and str(e)[0].islower()  # a sentence fragment the caller can prefix
        return
    assert 0 < inf.n_masked and len(inf.ids) <= 64
    assert all(inf.ids[i] == inf.blank_id for i, m in enumerate(inf.mask) if m)
    assert len(inf.hidden) == text.count("[HIDE]") - text.count("\\[HIDE]")


SEGMENT = st.text(
    st.characters(blacklist_characters="[\\", blacklist_categories=["Cs"]), max_size=12
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(SEGMENT, st.integers(1, 4)), min_size=1, max_size=5), SEGMENT)
def test_masks_and_visible_text_round_trip(tok, parts, tail):
    text = "".join(f"{s}[MASK:{n}]" for s, n in parts) + tail
    if not text.strip():
        return
    inf = parse_markup(text, tok)
    assert inf.n_masked == sum(n for _, n in parts)
    expected = "".join(s[:-1] if s.endswith(" ") else s for s, _ in parts) + tail
    assert visible_text(tok, inf) == expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 10**15), st.integers(1, 2000), st.sampled_from(["", "ab ", "\n"]))
def test_requested_counts_never_cost_memory(tok, count, repeat, sep):
    text = f"{sep}[MASK:{count}]" * repeat
    tracemalloc.start()
    try:
        inf = parse_markup(text, tok, max_length=256)
        assert len(inf.ids) <= 256
    except MarkupError as e:
        assert "too long" in str(e)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 64 * len(text) + 200_000, f"{peak} bytes for {len(text)} characters"


def test_the_hostile_request_of_issue_14_fails_fast_in_little_memory(tok):
    tracemalloc.start()
    with pytest.raises(MarkupError, match="too long"):
        parse_markup("[MASK:100000]" * 1000, tok, max_length=256)
    with pytest.raises(MarkupError, match="too long"):
        parse_markup("[MASK:100000]" * 1000, tok)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2_000_000


# -- coverage-guided fuzzing -----------------------------------------------------------------------


@pytest.mark.slow
def test_atheris_finds_no_crash_in_the_parser():
    if importlib.util.find_spec("atheris") is None:  # run in its own process, not imported here
        pytest.skip("atheris is not installed (pip install atheris)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "fuzz_markup.py"), "-atheris_runs=20000"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Done 20000 in" in out.stderr
