"""assd.infill (the library's one-line front door) and its command line, python -m assd."""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import assd
from assd.__main__ import main
from assd.text import infills_to_batch, parse_markup

ROOT = Path(__file__).resolve().parents[1]
LIGHTHOUSE = "The old lighthouse [MASK:12] over the harbour."


@pytest.mark.slow
def test_the_readme_example_and_what_it_reports():
    out = assd.infill(LIGHTHOUSE, model="prose", seed=0)
    assert out.text.startswith("The old lighthouse") and out.text.endswith(" over the harbour.")
    assert "[MASK" not in out.text and len(out.fills) == 1 and out.fills[0] in out.text
    assert out.tokens == 12 and 1 <= out.calls <= 12 and 1 <= out.rounds <= out.calls
    assert out.tokens_per_call == pytest.approx(12 / out.calls)
    assert math.isfinite(out.log_likelihood) and out.log_likelihood < 0
    assert assd.infill(LIGHTHOUSE, model="prose", seed=0) == out  # seeded: reproducible
    assert str(out) == out.text


def test_infill_is_the_low_level_pipeline_in_one_call(tiny_model_dir):
    """Same tokens, calls and log-likelihood as the five-import version it replaces."""
    lm = assd.load(tiny_model_dir)
    text = "The cat sat on the [MASK:6] The dog sat on the log."
    out = assd.infill(text, lm, sampler="assd", k=3, order="random", seed=4)
    g = torch.Generator().manual_seed(4)
    inf = parse_markup(text, lm.tokenizer, max_length=lm.model.max_length)
    batch = infills_to_batch([inf], order="random", generator=g)
    res = assd.sample(lm.model, batch, assd.ASSD(k=3), generator=g)[0]
    ll = assd.log_likelihood(lm.model, batch.with_tokens(torch.tensor([res.tokens])))[0]
    assert out.text == lm.tokenizer.decode(res.tokens, clean_up_tokenization_spaces=False)
    assert (out.calls, out.rounds, out.tokens) == (res.nfe, res.rounds, 6)
    assert out.log_likelihood == pytest.approx(float(ll), abs=1e-6)
    assert out.sampler == "assd-self(k=3)"


def test_padding_the_batch_width_changes_no_row(tiny_model_dir):
    """pad_to (what compiled rounds use to keep shapes few) pads columns nobody generates."""
    lm = assd.load(tiny_model_dir)
    inf = parse_markup("The cat sat on the [MASK:6] The dog.", lm.tokenizer)
    n = len(inf.ids)
    plain = infills_to_batch([inf])
    padded = infills_to_batch([inf], pad_to=64, max_length=lm.model.max_length)
    assert padded.tokens.shape[1] == min(64, lm.model.max_length or 64) >= n
    assert infills_to_batch([inf], pad_to=8, max_length=n).tokens.shape[1] == n  # capped
    res = [
        assd.sample(lm.model, b, assd.ASSD(k=3), torch.Generator().manual_seed(2))[0]
        for b in (plain, padded)
    ]
    assert res[1].n_generated == res[0].n_generated == 6
    assert res[1].tokens[:n] == res[0].tokens  # same draws: padding takes the last ranks
    with pytest.raises(ValueError, match="pad_to"):
        infills_to_batch([inf], pad_to=0)
    # Random orders are drawn before padding: the same orders and the same generator state.
    infs = [inf, parse_markup("a [MASK:3] b", lm.tokenizer)]
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = infills_to_batch(infs, order="random", generator=g1)
    b = infills_to_batch(infs, order="random", generator=g2, pad_to=64, max_length=None)
    assert b.tokens.shape[1] == 64 and torch.equal(b.sigma[:, :n], a.sigma)
    assert torch.equal(b.tokens[:, :n], a.tokens) and torch.equal(g1.get_state(), g2.get_state())


def test_load_with_compiled_rounds(tiny_model_dir):
    """compile=True marks the engine (the sampling loop compiles its rounds); reference: error."""
    lm = assd.load(tiny_model_dir, compile=True)
    assert lm.model.compile_rounds and not assd.load(tiny_model_dir).model.compile_rounds
    with pytest.raises(ValueError, match="compile=True.*backend='engine'"):
        assd.load(tiny_model_dir, backend="reference", compile=True)


def test_a_list_of_texts_is_one_batch(tiny_model_dir):
    texts = [
        "The cat [MASK:3] mat.",
        "def add(a, b):\n    return [HIDE]a + b[/HIDE]\n",
        "a [MASK] b",
    ]
    outs = assd.infill(texts, tiny_model_dir, sampler="sequential", seed=0)
    assert [o.tokens for o in outs] == [o.calls for o in outs]  # sequential: one call per token
    assert outs[0].text.startswith("The cat") and outs[0].text.endswith(" mat.")
    assert outs[1].text.startswith("def add(a, b):\n    return") and outs[1].text.endswith("\n")
    assert outs[1].hidden == ("a + b",) and outs[0].hidden == ()
    assert outs[2].tokens == 1 and outs[2].text.endswith(" b")


@pytest.mark.parametrize(
    "kw, calls",
    [
        (dict(sampler="sequential"), lambda n: n),
        (dict(sampler="mean-field", k=4), lambda n: math.ceil(n / 4)),
        (dict(sampler="one-call", k=3), None),
        (dict(sampler=assd.ASSD(k=2, bonus=True)), None),
        (dict(), None),  # the fastest exact sampler
    ],
)
def test_samplers_by_name_or_object(tiny_model_dir, kw, calls):
    out = assd.infill("Once upon a [MASK:9] forest.", tiny_model_dir, seed=1, **kw)
    assert out.tokens == 9 and 1 <= out.calls <= 9
    if calls is not None:
        assert out.calls == calls(9)


@pytest.mark.parametrize(
    "args, kw, error, match",
    [
        (["bad [MASK:x] markup"], {}, ValueError, "^text: malformed mask markup"),
        (["full-width [MASK:２]"], {}, ValueError, "^text: .*ASCII digits"),
        (["nothing masked here"], {}, ValueError, "^text: nothing to fill"),
        (["x [MASK:100]"], {}, ValueError, "^text: the text is too long.* at most 64"),
        (["[MASK:100000]" * 1000], {}, ValueError, "^text: the text is too long"),
        (["[MASK:4]"], {}, ValueError, "^text: everything is masked"),
        ([["a [MASK] b", "no mask"]], {}, ValueError, r"^text\[1\]: nothing to fill"),
        ([[]], {}, ValueError, "^text: the list is empty"),
        ([b"a [MASK] b"], {}, TypeError, "^text must be a str"),
        (["a [MASK] b"], dict(model="no-such-model"), ValueError, "^model: unknown model"),
        (["a [MASK] b"], dict(model="./no/such/dir"), ValueError, "^model: no model directory"),
        (["a [MASK] b"], dict(model=3), TypeError, "^model must be"),
        (["a [MASK] b"], dict(sampler="magic"), ValueError, "^sampler must be one of"),
        (["a [MASK] b"], dict(k=3), ValueError, "^k: the fastest sampler"),
        (["a [MASK] b"], dict(sampler=assd.ASSD(), k=3), ValueError, "go to the sampler"),
        (["a [MASK] b"], dict(sampler="assd", k=0), ValueError, "k .* must be >= 1"),
        (["a [MASK] b"], dict(sampler="assd", temperature=0.0), ValueError, "temperature"),
        (["a [MASK] b"], dict(order="sideways"), ValueError, "order must be one of"),
        (["a [MASK] b"], dict(seed=-1), ValueError, r"^seed must lie in \[0, 2\*\*63\)"),
        (["a [MASK] b"], dict(seed=10**30), ValueError, "^seed must lie in"),
        (["a [MASK] b"], dict(seed=2.5), TypeError, "^seed must be an int"),
        (["a [MASK] b"], dict(seed=1, generator=torch.Generator()), ValueError, "not both"),
    ],
)
def test_bad_input_names_the_argument_and_the_fix(tiny_model_dir, args, kw, error, match):
    kw = {"model": tiny_model_dir, **kw}
    with pytest.raises(error, match=match):
        assd.infill(*args, **kw)


# -- python -m assd --------------------------------------------------------------------------------


def test_cli_prints_the_text_and_its_statistics(tiny_model_dir, capsys):
    assert main(["The cat sat on the [MASK:5] log.", "--model", tiny_model_dir, "--seed", "2"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("The cat sat on the") and out.endswith(" log.\n") and "[MASK" not in out
    assert "5 tokens" in err and "network calls" in err and "log-likelihood" in err
    same = assd.infill("The cat sat on the [MASK:5] log.", tiny_model_dir, seed=2)
    assert out == same.text + "\n"


def test_cli_reads_standard_input_and_prints_json(tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("def add(a, b):\n    return [MASK:4]\n"))
    argv = ["-", "--model", tiny_model_dir, "--sampler", "sequential", "--json", "--seed", "0"]
    assert main(argv) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["text"].startswith("def add(a, b):\n    return") and got["text"].endswith("\n")
    assert got["tokens"] == got["calls"] == 4 and got["sampler"] == "sequential"


@pytest.mark.parametrize(
    "argv, match",
    [
        (["no masks"], "error: text: nothing to fill"),
        (["x [MASK:２]"], "error: text: malformed .*ASCII digits"),
        (["x [MASK]", "--model", "nope"], "error: model: unknown model 'nope'"),
        (["x [MASK]", "-k", "3"], "error: k: the fastest sampler"),
    ],
)
def test_cli_errors_are_one_line_without_a_traceback(tiny_model_dir, capsys, argv, match):
    argv = [*argv, "--model", tiny_model_dir] if "--model" not in argv else argv
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(match, err), err


@pytest.mark.slow
def test_python_dash_m_assd_runs(tiny_model_dir):
    run = subprocess.run(
        [sys.executable, "-m", "assd", "-", "--model", tiny_model_dir, "--seed", "0"],
        input="The cat [MASK:3] mat.",
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("The cat") and run.stdout.endswith(" mat.\n")
    assert "3 tokens" in run.stderr
