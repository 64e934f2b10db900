"""assd.load on broken or unusual model directories (tiny random XLNets, tokenizers trained here)."""

from __future__ import annotations

import logging
import os

import pytest
import torch
from conftest import make_tiny_xlnet, make_tokenizer

import assd
from assd.backends import XLNetEngine, XLNetReference


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def save(d, tok, *, with_tokenizer=True, vocab=None, **config):
    net = make_tiny_xlnet(vocab or len(tok))
    for k, v in config.items():
        setattr(net.config, k, v)
    net.save_pretrained(d)
    if with_tokenizer:
        tok.save_pretrained(d)
    return str(d)


def test_directory_without_tokenizer_names_the_missing_file(tmp_path, tok):
    d = save(tmp_path, tok, with_tokenizer=False)
    with pytest.raises(ValueError, match="no tokenizer: tokenizer.json is missing"):
        assd.load(d, device="cpu")
    # Only the tokenizer's settings, no vocabulary: the same error, not a placeholder.
    tok.save_pretrained(d)
    os.remove(os.path.join(d, "tokenizer.json"))
    assert os.path.exists(os.path.join(d, "tokenizer_config.json"))
    with pytest.raises(ValueError, match="tokenizer.json is missing"):
        assd.load(d, device="cpu")


def test_tokenizer_of_special_tokens_only_is_refused(tmp_path):
    """A tokenizer file whose vocabulary holds nothing but special tokens is a placeholder."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    specials = {"<unk>": 0, "<pad>": 1, "<mask>": 2}
    empty = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(specials, unk_token="<unk>")),
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
    )
    d = save(tmp_path, empty, vocab=20)
    with pytest.raises(ValueError, match="holds only special tokens"):
        assd.load(d, device="cpu")


def test_auto_falls_back_to_the_reference_backend_with_a_reason(tmp_path, tok, caplog):
    d = save(tmp_path, tok, attn_type="uni")  # a valid XLNet the engine does not reproduce
    with caplog.at_level(logging.WARNING, logger="assd"):
        lm = assd.load(d, backend="auto", device="cpu")
    assert isinstance(lm.model, XLNetReference)
    reasons = [r.getMessage() for r in caplog.records if r.name == "assd"]
    assert len(reasons) == 1 and "reference backend" in reasons[0] and "attn_type" in reasons[0]
    with pytest.raises(ValueError, match="attn_type"):
        assd.load(d, backend="engine", device="cpu")
    # ... and it samples.
    tokens = torch.randint(6, lm.model.vocab_size, (6,))
    sigma, P = assd.order_from_mask(torch.tensor([False, False, True, True, True, True]))
    res = assd.sample(lm.model, assd.make_batch(tokens, sigma, P), assd.ASSD(k=2))[0]
    assert res.n_generated == 4 and res.tokens[:2] == tokens[:2].tolist()


def test_auto_uses_the_engine_silently_when_it_can(tiny_model_dir, caplog):
    with caplog.at_level(logging.DEBUG, logger="assd"):
        lm = assd.load(tiny_model_dir, device="cpu")
    assert isinstance(lm.model, XLNetEngine)
    assert [r for r in caplog.records if r.name == "assd"] == []


@pytest.mark.parametrize("backend", ["engine", "reference"])
def test_loaded_models_know_their_mask_id(tiny_model_dir, backend):
    lm = assd.load(tiny_model_dir, backend=backend, device="cpu")
    assert lm.model.mask_id == lm.tokenizer.mask_token_id == 2


def test_tokenizer_and_model_that_do_not_match(tmp_path, tok):
    d = save(tmp_path, tok, vocab=2)  # the tokenizer's <mask> is id 2: outside the model
    with pytest.raises(ValueError, match="mask id 2 lies outside the model's vocabulary"):
        assd.load(d, device="cpu")
