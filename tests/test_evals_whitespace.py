"""The paper code model's whitespace mapping (``assd.whitespace``), its detection on load, and
the code eval using it, on a tiny XLNet + tokenizer saved locally (no network)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny_xlnet, make_tokenizer

import assd
from assd import whitespace
from assd.text import decode
from evals import infill_code
from evals.infill_prose import infill_batch

SOURCE = "def f(x):\n\tif x:\n   return  1\n"


def test_mapping_order_and_inverse():
    enc = whitespace.encode(SOURCE)
    # newline, tab, then two spaces; three spaces become <unk> + one space (the paper's order)
    assert enc == "def f(x):<cls><sep>if x:<cls><unk> return<unk>1<cls>"
    assert whitespace.decode(enc) == SOURCE
    assert whitespace.decode("<pad>x") == "   x"  # the paper's unreachable rule, mapped back
    assert whitespace.decode_middle(" return<unk>a<cls>") == "return  a\n"
    with pytest.raises(ValueError, match="whitespace mode"):
        whitespace.encode("x", "tabs")


def test_detection_by_config_flag_or_hub_id():
    class Cfg:
        pass

    flagged = Cfg()
    flagged.assd_whitespace = "paper-code"
    assert whitespace.detect(flagged) == "paper-code"
    assert whitespace.detect(Cfg(), "therealgabeguo/ASARM", "code") == "paper-code"
    assert whitespace.detect(Cfg(), "therealgabeguo/ASARM", "nlp") is None
    assert whitespace.detect(Cfg(), "someone/ASARM", "code") is None
    bad = Cfg()
    bad.assd_whitespace = "spaces"
    with pytest.raises(ValueError, match="whitespace mode"):
        whitespace.detect(bad)


@pytest.fixture(scope="module")
def paper_code_dir(tmp_path_factory):
    """A tiny model whose config.json carries the flag, as a local copy of the paper's would."""
    d = tmp_path_factory.mktemp("paper_code")
    tok = make_tokenizer()
    net = make_tiny_xlnet(len(tok), seed=1)
    net.config.assd_whitespace = whitespace.PAPER_CODE
    net.save_pretrained(d)
    tok.save_pretrained(d)
    assert json.loads((d / "config.json").read_text())["assd_whitespace"] == "paper-code"
    return str(d)


def test_load_applies_the_mapping_and_the_papers_forbidden_ids(paper_code_dir, tiny_model_dir):
    lm = assd.load(paper_code_dir, backend="reference", device="cpu")
    assert lm.whitespace == "paper-code"
    assert lm.model.forbidden_ids == (lm.tokenizer.mask_token_id,)
    plain = assd.load(tiny_model_dir, backend="reference", device="cpu")
    assert plain.whitespace is None
    assert set(plain.model.forbidden_ids) == set(plain.tokenizer.all_special_ids)
    assert len(plain.model.forbidden_ids) > 1


def test_code_eval_maps_prompt_suffix_solution_and_the_decoded_middle(paper_code_dir):
    lm = assd.load(paper_code_dir, backend="reference", device="cpu")
    tok = lm.tokenizer
    problem = {
        "task_id": "T/0",
        "entry_point": "f",
        "prompt": "def f(x):\n\tif x:\n",
        "canonical_solution": "\t\treturn  x\n",
        "suffix": "\treturn 0\n",
        "test": "",
    }
    ((_, rec),) = infill_code._infill(lm, [problem], k=3, seed=5)
    mapped = whitespace.encode(problem["canonical_solution"])
    n_mapped = len(tok(mapped, add_special_tokens=False)["input_ids"])
    n_raw = len(tok(problem["canonical_solution"], add_special_tokens=False)["input_ids"])
    assert rec["n_masked"] == n_mapped != n_raw
    # the same draw by hand: the model saw <cls>/<sep> ids, the middle is mapped back
    parts = [
        tuple(whitespace.encode(problem[k]) for k in ("prompt", "canonical_solution", "suffix"))
    ]
    texts, results, infills = infill_batch(
        lm, parts, assd.ASSD(3), torch.Generator().manual_seed(5)
    )
    cls, sep = tok.convert_tokens_to_ids(["<cls>", "<sep>"])
    assert cls in infills[0].ids and sep in infills[0].ids
    middle = [t for t, m in zip(results[0].tokens, infills[0].mask) if m]
    assert rec["completion"] == whitespace.decode_middle(decode(tok, middle))
    assert "<cls>" not in rec["completion"] and "<sep>" not in rec["completion"]
