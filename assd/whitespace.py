"""Whitespace mappings that some checkpoints were trained with, and how to recognise them.

The paper's code model (``therealgabeguo/ASARM``, revision ``code``) uses XLNet's SentencePiece
tokenizer, which drops newlines and collapses runs of spaces. Its training and evaluation code
therefore rewrites whitespace as special tokens before tokenizing, in this order:

    "\\n" -> "<cls>",   "\\t" -> "<sep>",   "  " (two spaces) -> "<unk>"

(its third rule, three spaces -> "<pad>", never fires: the two-space rule runs first). The
prefix, the suffix and the reference solution are all mapped; the decoded middle is mapped back
and its first character, a leading space that SentencePiece decoding adds, is dropped. Special
tokens carry the whitespace, so the only token never generated is ``<mask>`` (the paper's code
zeroes that one column and nothing else).

``detect`` recognises such a checkpoint by ``"assd_whitespace": "paper-code"`` in its
config.json (add it to a local copy), or by the Hub id and revision.
"""

from __future__ import annotations

PAPER_CODE = "paper-code"
MODES = (PAPER_CODE,)
CONFIG_KEY = "assd_whitespace"
PAPER_HUB_ID = "therealgabeguo/ASARM"
PAPER_CODE_REVISION = "code"

# (whitespace, token) in the order the paper applies them when encoding.
_PAPER = (("\n", "<cls>"), ("\t", "<sep>"), ("  ", "<unk>"))
# Decoding also maps the paper's unreachable "<pad>" rule back, as its reverse table does.
_PAPER_BACK = (("<pad>", "   "), ("<unk>", "  "), ("<sep>", "\t"), ("<cls>", "\n"))


def _check(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"whitespace mode must be one of {MODES}, got {mode!r}")


def encode(text: str, mode: str = PAPER_CODE) -> str:
    """Text -> the model's input text (whitespace replaced by special-token strings)."""
    _check(mode)
    for ws, tok in _PAPER:
        text = text.replace(ws, tok)
    return text


def decode(text: str, mode: str = PAPER_CODE) -> str:
    """Decoded model text -> text with whitespace restored."""
    _check(mode)
    for tok, ws in _PAPER_BACK:
        text = text.replace(tok, ws)
    return text


def decode_middle(text: str, mode: str = PAPER_CODE) -> str:
    """A decoded infilled middle -> code: whitespace restored, the leading character dropped."""
    return decode(text, mode)[1:]


def forbidden_ids(tokenizer, mode: str = PAPER_CODE) -> tuple[int, ...]:
    """Token ids never generated under ``mode``: only the mask token (whitespace lives in the
    other special tokens)."""
    _check(mode)
    mid = getattr(tokenizer, "mask_token_id", None)
    if mid is None:
        raise ValueError("the tokenizer has no mask token: AS-ARM tokenizers need one")
    return (int(mid),)


def detect(config, name: str | None = None, revision: str | None = None) -> str | None:
    """The whitespace mode of a checkpoint, or None: the config flag wins, then the Hub id."""
    flag = getattr(config, CONFIG_KEY, None)
    if flag is not None:
        _check(flag)
        return flag
    if name == PAPER_HUB_ID and revision == PAPER_CODE_REVISION:
        return PAPER_CODE
    return None
