"""Prose infilling on ROCStories: fill the middle sentence (1/5) or the middle three (3/5).

As in the paper: sentences are joined by spaces, the blank gets the true token length of the
missing text, decoding is left to right over the blank with ASSD (k=10), and the infill is
scored against the missing text with ROUGE-1/2/L (x100).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

import assd
from assd.rng import mix_seed
from assd.text import Infill, decode, infills_to_batch

from .data import Story
from .metrics import rouge, rouge_scores
from .stats import summary
from .store import Store, shard

SETTINGS = {"1/5": (2, 3), "3/5": (1, 4)}  # masked sentence range [a, b) of the five


def split_story(story: Story, setting: str) -> tuple[str, str, str]:
    """-> (prefix, middle, suffix) with the joining spaces kept on the middle and suffix."""
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {tuple(SETTINGS)}, got {setting!r}")
    a, b = SETTINGS[setting]
    s = story.sentences
    prefix = " ".join(s[:a])
    middle = " " + " ".join(s[a:b])
    suffix = (" " + " ".join(s[b:])) if b < len(s) else ""
    return prefix, middle, suffix


def n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def fit(inf: Infill, max_length: int | None) -> Infill:
    """Cut the context of a one-blank infill to ``max_length`` tokens around the blank.

    The prefix loses tokens on the left, the suffix on the right; the nearer context is kept
    (half the budget each side, the unused part of a short side going to the other).
    """
    L = len(inf.ids)
    if max_length is None or L <= max_length:
        return inf
    a = inf.mask.index(True)
    b = L - inf.mask[::-1].index(True)
    budget = max_length - (b - a)
    if budget < 0:
        raise ValueError(
            f"the blank ({b - a} tokens) is longer than the model's max length {max_length}"
        )
    left = min(a, max(budget // 2, budget - (L - b)))
    right = budget - left
    return Infill(inf.ids[a - left : b + right], inf.mask[a - left : b + right], inf.blank_id)


def infill_batch(lm: assd.Loaded, parts: list[tuple[str, str, str]], sampler, g: torch.Generator):
    """Infill each (prefix, middle, suffix) with the middle's true length -> (texts, results, infills).

    Contexts longer than the model's max length are cut around the blank (see :func:`fit`).
    """
    tok, max_len = lm.tokenizer, lm.model.max_length
    infills = [
        fit(Infill.from_parts(tok, p, max(1, n_tokens(tok, m)), s), max_len) for p, m, s in parts
    ]
    results = assd.sample(
        lm.model, infills_to_batch(infills, "left-to-right"), sampler, generator=g
    )
    texts = []
    for inf, res in zip(infills, results):
        ids = [t for t, m in zip(res.tokens, inf.mask) if m]
        texts.append(decode(lm.tokenizer, ids))
    return texts, results, infills


def run(
    lm: assd.Loaded,
    stories: list[Story],
    store: Store,
    k: int,
    seed: int,
    settings: tuple[str, ...] = ("1/5", "3/5"),
    batch_size: int = 8,
    rank: int = 0,
    world: int = 1,
) -> list[dict]:
    """Every (setting, story) of this process's share not yet in ``store``, in batches fixed by
    position (one process or several give the same samples); a failing batch is retried per
    item and a failing item is recorded."""
    items = [(st, s) for st in settings for s in stories]
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    mine = shard(list(enumerate(batches)), rank, world)
    todo = [[it for it in b if not store.done(f"{it[0]}/{it[1].id}")] for _, b in mine]
    bar = tqdm(total=sum(map(len, todo)), desc="rocstories", unit="story")
    for (j, _), chunk in zip(mine, todo):
        if chunk:
            s = mix_seed(seed, j)
            store.run_chunk(chunk, lambda c, s=s: _run_chunk(lm, c, store, k, s), _item_id)
        bar.update(len(chunk))
    bar.close()
    return store.records()


def _item_id(item: tuple[str, Story]) -> str:
    return f"{item[0]}/{item[1].id}"


def _run_chunk(lm, chunk, store: Store, k: int, seed: int) -> list:
    parts = [split_story(s, st) for st, s in chunk]
    g = torch.Generator().manual_seed(seed)
    texts, results, infills = infill_batch(lm, parts, assd.ASSD(k), g)
    refs = [m.strip() for _, m, _ in parts]
    preds = [t.strip() for t in texts]
    scores = rouge_scores(preds, refs)
    for (st, s), (p, _m, x), pred, ref, res, sc, inf in zip(
        chunk, parts, preds, refs, results, scores, infills
    ):
        rec = {"id": _item_id((st, s)), "setting": st, "story": s.id, "seed": seed}
        rec |= {"prefix": p, "suffix": x, "reference": ref, "prediction": pred}
        rec |= {"n_masked": inf.n_masked, "length": len(inf.ids), "nfe": res.nfe}
        rec |= {"rounds": res.rounds, "tokens_per_call": res.tokens_per_call, **sc}
        store.add(rec)
    return []


def summarize(records: list[dict]) -> dict:
    """Per setting: corpus ROUGE (mean of per-story F x100), calls and lengths."""
    out = {}
    for st in SETTINGS:
        rows = [r for r in records if r.get("setting") == st]
        if not rows:
            continue
        out[st] = {
            **rouge([r["prediction"] for r in rows], [r["reference"] for r in rows]),
            "n": len(rows),
            "nfe": summary([r["nfe"] for r in rows]),
            "n_masked": summary([r["n_masked"] for r in rows]),
            "tokens_per_call": summary([r["tokens_per_call"] for r in rows]),
        }
    return out
