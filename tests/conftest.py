"""Shared fixtures: a tiny XLNet-format AS-ARM with a tokenizer trained on the spot."""

from __future__ import annotations

import os

import pytest

# One intra-op thread for the tests (and the processes they launch): they run many tiny tensor
# operations, where a second OpenMP thread only adds barrier waits, and on a busy 2-core machine
# those waits explode (a tiny training run: 0.4 s with one thread, 16 s with two).
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


CORPUS = [
    "The cat sat on the mat. The dog sat on the log.",
    "Once upon a time there was a little fox who lived in the forest.",
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n    print(i)\n",
    "It was the best of times, it was the worst of times.",
] * 20

SPECIALS = ["<unk>", "<pad>", "<mask>", "<cls>", "<sep>", "<eod>"]


def make_tokenizer(vocab_size: int = 300):
    """A byte-level BPE tokenizer (keeps whitespace exactly) in Hugging Face format."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        cls_token="<cls>",
        sep_token="<sep>",
        additional_special_tokens=["<eod>"],
    )


def make_tiny_xlnet(vocab_size: int, seed: int = 0, d_model: int = 32, n_layer: int = 2):
    import torch
    from transformers import XLNetConfig, XLNetLMHeadModel

    torch.manual_seed(seed)
    cfg = XLNetConfig(
        vocab_size=vocab_size,
        d_model=d_model,
        n_layer=n_layer,
        n_head=2,
        d_inner=64,
        dropout=0.0,
        pad_token_id=1,
    )
    cfg.assd_max_length = 64
    return XLNetLMHeadModel(cfg).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A directory with a tiny random XLNet AS-ARM + tokenizer, as save_pretrained writes them."""
    d = tmp_path_factory.mktemp("tiny_asarm")
    tok = make_tokenizer()
    make_tiny_xlnet(len(tok)).save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)
