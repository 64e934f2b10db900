"""Byte-level BPE tokenizers for small models trained from scratch.

Byte-level (GPT-2 style) so that every string round-trips exactly: code keeps its newlines,
tabs and indentation, and nothing is normalised away. The special tokens are the ones an XLNet
model and the ``assd`` loader need; ``<mask>`` fills positions that are to be generated and
``<eod>`` joins packed documents.

``split_newlines=True`` (what code models need) makes every newline a token boundary, so a text
cut at a line start tokenizes exactly as it does in one piece. Without it, GPT-2's rule glues a
newline to the indentation that follows ("\n\n   " is one token): a prompt that ends at a line
(every single-line infilling task) then ends in a lone "\n\n" that training only ever saw
before unindented lines, and the model writes a new top-level statement instead of the line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

SPECIAL_TOKENS = ("<unk>", "<pad>", "<mask>", "<cls>", "<sep>", "<eod>")


def train_bpe(
    texts: Iterable[str],
    vocab_size: int = 8192,
    min_frequency: int = 2,
    max_chars: int | None = None,
    split_newlines: bool = False,
):
    """Train a byte-level BPE on ``texts``; returns a ``PreTrainedTokenizerFast``.

    Special tokens take ids 0..5 in the order of ``SPECIAL_TOKENS``. ``max_chars`` caps the text
    read (the merges of a small vocabulary settle long before 60 MB). ``split_newlines``: every
    "\n" is a token of its own (module docstring).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise ValueError(
            f"vocab_size must be at least {len(SPECIAL_TOKENS) + 256} (specials + 256 bytes)"
        )
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if split_newlines:
        lines = pre_tokenizers.Split(Regex("\n"), behavior="isolated")
        tok.pre_tokenizer = pre_tokenizers.Sequence([lines, byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_capped(texts, max_chars), trainer=trainer)
    return wrap(tok)


def wrap(tok):
    """A ``tokenizers.Tokenizer`` as a Hugging Face fast tokenizer with XLNet's special tokens."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        cls_token="<cls>",
        sep_token="<sep>",
        additional_special_tokens=["<eod>"],
        clean_up_tokenization_spaces=False,  # exact round trip: never rewrite " ." etc.
    )


def save(tokenizer, out_dir: str | Path) -> None:
    """Save in Hugging Face format (``AutoTokenizer.from_pretrained(out_dir)`` loads it)."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    # Name the class and the extra token the way transformers 4.x and 5.x both read them.
    path = Path(out_dir) / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    extra = cfg.get("extra_special_tokens") or cfg.get("additional_special_tokens") or []
    cfg["additional_special_tokens"] = extra
    for key in ("is_local", "local_files_only", "_commit_hash"):  # loader bookkeeping, not config
        cfg.pop(key, None)
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def load(name_or_path: str, revision: str | None = None):
    """``AutoTokenizer`` for a folder or Hub name."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name_or_path, revision=revision)


def eod_id(tokenizer) -> int:
    """The end-of-document id: ``<eod>`` if the vocabulary has it, else sep/eos."""
    vocab = tokenizer.get_vocab()
    for name in ("<eod>", tokenizer.sep_token, tokenizer.eos_token):
        if name is not None and name in vocab:
            return int(vocab[name])
    raise ValueError("tokenizer has no <eod>, sep or eos token to join documents with: add one")


def _capped(texts: Iterable[str], max_chars: int | None) -> Iterator[str]:
    n = 0
    for t in texts:
        yield t
        n += len(t)
        if max_chars is not None and n >= max_chars:
            return


def main(argv: list[str] | None = None) -> None:
    """``python -m training.tokenizer DATA OUT_DIR --vocab-size 8192``: train and save.

    With ``--val-every-doc N`` every N-th document is left out, exactly the documents that
    ``python -m training.train --val-every-doc N`` holds out for validation: the tokenizer never
    sees validation text."""
    import argparse

    from .data import read_texts

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument(
        "data",
        help="local .json/.jsonl/.txt files (.gz/.xz too; comma-separated) or a Hub dataset name",
    )
    p.add_argument("out_dir")
    p.add_argument("--text-field", default="text")
    p.add_argument("--data-dir", default=None, help="Hub dataset data_dir (e.g. python)")
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--max-chars", type=int, default=40_000_000)
    p.add_argument(
        "--split-newlines",
        action="store_true",
        help="every newline a token of its own (code: prompts cut at a line start tokenize as in one piece)",
    )
    p.add_argument(
        "--val-every-doc",
        type=int,
        default=None,
        help="leave out every N-th document (the training run's validation documents)",
    )
    a = p.parse_args(argv)
    texts = read_texts(a.data, text_field=a.text_field, data_dir=a.data_dir)
    if a.val_every_doc:
        every = a.val_every_doc
        texts = (t for i, t in enumerate(texts) if i % every != every - 1)
    tok = train_bpe(texts, a.vocab_size, max_chars=a.max_chars, split_newlines=a.split_newlines)
    save(tok, a.out_dir)
    print(f"saved a {len(tok)}-token byte-level BPE to {a.out_dir}")


if __name__ == "__main__":
    main()
