"""Paper Table 1: speculative decoding on WikiText-2 (calls, speed, quality, equality tests).

Per sequence: L tokens of packed WikiText-2 test text, a random order with 5% visible
(``assd.random_order(L, 0.95, g)``), the same prompt for every sampler (paired comparisons).
Each sampler's generations are scored (perplexity, entropy) and compared with sequential
decoding's by t-tests, Wilcoxon, Mann-Whitney and Kolmogorov-Smirnov, and by the confidence
interval of the difference of means with the smallest difference the test could detect: exact
samplers should show no difference, and the interval says how small a difference is ruled out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from tqdm.auto import tqdm

import assd
from assd.rng import mix_seed
from assd.text import decode

from .stats import compare, difference, summary
from .store import Store, shard

TAG_ORDER, TAG_SAMPLE = 1, 2  # mix_seed purpose tags: a sequence's order; its samples


@dataclass(frozen=True)
class SamplerSpec:
    """A named sampler configuration; ``exact`` samplers must match sequential's distribution."""

    name: str
    make: Callable[[], object]
    exact: bool = True


def exact_samplers(k: int, draft_head: bool = False) -> list[SamplerSpec]:
    """Sequential, paper ASSD, n-gram-draft ASSD and the faster exact variants (with the
    model's draft head when it has one)."""
    specs = [
        SamplerSpec("sequential", lambda: assd.Sequential()),
        SamplerSpec(f"assd (k={k})", lambda: assd.ASSD(k)),
        SamplerSpec(f"assd-ngram (k={k})", lambda: assd.ASSD(k, draft="bigram")),
        SamplerSpec(f"assd-bonus (k={k})", lambda: assd.ASSD(k, bonus=True)),
        SamplerSpec(f"assd-one-call (k={k})", lambda: assd.ASSD(k, one_call=True)),
    ]
    if draft_head:
        specs.append(SamplerSpec(f"assd-head (k={k})", lambda: assd.ASSD(k, draft="head")))
    return specs


def mean_field_samplers(ks: tuple[int, ...]) -> list[SamplerSpec]:
    """Unverified parallel decoding at several tokens-per-call settings (not exact)."""
    return [
        SamplerSpec(f"mean-field (k={k})", (lambda k=k: assd.MeanField(k)), exact=False) for k in ks
    ]


@dataclass
class Prompt:
    """One evaluation sequence: the true tokens, its order and the visible mask (True = masked)."""

    idx: int
    tokens: list[int]
    sigma: torch.Tensor
    mask: torch.Tensor
    seed: int = 0  # of the generator that drew the order

    def batch(self, blank_id: int) -> assd.Batch:
        t = torch.tensor(self.tokens)
        t = torch.where(
            self.mask, torch.full_like(t, blank_id), t
        )  # the model never sees the answer
        return assd.make_batch(t, self.sigma, int((~self.mask).sum()))


def make_prompts(sequences: list[list[int]], rate: float, seed: int) -> list[Prompt]:
    """A random order per sequence from a generator seeded with (seed, index): reproducible."""
    out = []
    for i, toks in enumerate(sequences):
        s = mix_seed(seed, i, TAG_ORDER)
        sigma, mask = assd.random_order(len(toks), rate, torch.Generator().manual_seed(s))
        out.append(Prompt(i, toks, sigma, mask, s))
    return out


class Forbidding:
    """An ASARM with another set of never-generated tokens (everything else delegated).

    The paper's code zeroes only the ``<mask>`` column; with its packing (special tokens in
    the text) the paper's model must be free to generate ``<sep>``, ``<cls>`` and ``</s>``.
    """

    def __init__(self, model: assd.ASARM, forbidden_ids: tuple[int, ...]):
        self.inner, self.forbidden_ids = model, tuple(forbidden_ids)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    @property
    def device(self) -> torch.device:
        return self.inner.device

    def open(self, batch: assd.Batch):
        return self.inner.open(batch)


def forbid_only_mask(lm: assd.Loaded) -> assd.Loaded:
    """``lm`` with only its mask token forbidden (the paper's sampling code)."""
    return replace(lm, model=Forbidding(lm.model, (int(lm.tokenizer.mask_token_id),)))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_one(
    lm: assd.Loaded, prompt: Prompt, spec: SamplerSpec, seed: int, evaluator, blank_id: int
) -> dict:
    """Sample one prompt with one sampler (timed, synchronised) and score it."""
    g = torch.Generator().manual_seed(mix_seed(seed, prompt.idx, TAG_SAMPLE))
    batch = prompt.batch(blank_id)
    dev = lm.model.device
    _sync(dev)
    t0 = time.perf_counter()
    sampler = spec.make()
    res = assd.sample(lm.model, batch, sampler, generator=g)[0]
    _sync(dev)
    secs = time.perf_counter() - t0
    text = decode(lm.tokenizer, res.tokens)
    score = evaluator(res.tokens, text)
    return {
        "sampler": spec.name,
        "exact": spec.exact,
        "seq": prompt.idx,
        "seed": g.initial_seed(),
        "order_seed": prompt.seed,
        "length": len(res.tokens),
        "n_visible": int((~prompt.mask).sum()),
        "nfe": res.nfe,
        "rounds": res.rounds,
        "n_generated": res.n_generated,
        "tokens_per_call": res.tokens_per_call,
        "acceptance_rate": res.acceptance_rate if isinstance(sampler, assd.ASSD) else None,
        "seconds": secs,
        "ppl": score.ppl,
        "entropy": score.entropy,
        "tokens": res.tokens,
        "text": text,
        "round_drafted": [len(t.drafted) for t in res.trace],
        "round_accepted": [len(t.accepted) for t in res.trace],
        "round_committed": [len(t.tokens) for t in res.trace],
        "round_calls": [t.calls for t in res.trace],
    }


def warm_up(lm: assd.Loaded, prompt: Prompt, specs: list[SamplerSpec], blank_id: int) -> None:
    """One untimed run of every sampler on a short prefix (lazy init, kernels, caches)."""
    n = min(len(prompt.tokens), 32)
    g = torch.Generator().manual_seed(0)
    sigma, mask = assd.random_order(n, 0.95, g)
    short = Prompt(-1, prompt.tokens[:n], sigma, mask)
    for spec in specs:
        assd.sample(lm.model, short.batch(blank_id), spec.make(), generator=g, trace=False)
    _sync(lm.model.device)


def run(
    lm: assd.Loaded,
    prompts: list[Prompt],
    specs: list[SamplerSpec],
    store: Store,
    seed: int,
    evaluator,
    rank: int = 0,
    world: int = 1,
) -> list[dict]:
    """Every (sampler, prompt) pair of this process's prompts not yet in ``store``; failures
    are recorded, not raised. A prompt's samplers all run in the same process (paired timings)."""
    blank_id = lm.tokenizer.mask_token_id
    mine = shard(prompts, rank, world)
    todo = [(s, p) for s in specs for p in mine if not store.done(f"{s.name}/{p.idx}")]
    if todo:
        warm_up(lm, prompts[0], specs, blank_id)
    for spec, p in tqdm(todo, desc="spec-decoding", unit="seq"):
        item_id = f"{spec.name}/{p.idx}"
        with store.guard(item_id, sampler=spec.name, seq=p.idx):
            store.add({"id": item_id, **run_one(lm, p, spec, seed, evaluator, blank_id)})
    return store.records()


METRICS = ("nfe", "rounds", "tokens_per_call", "acceptance_rate", "seconds", "ppl", "entropy")


def summarize(records: list[dict], reference: str = "sequential") -> dict:
    """Per sampler: summary of every metric, and p-values against ``reference`` for ppl/entropy."""
    by: dict[str, dict[int, dict]] = {}
    for r in records:
        by.setdefault(r["sampler"], {})[r["seq"]] = r
    ref = by.get(reference, {})
    out = {}
    for name, rows in by.items():
        s = {m: summary([rows[i][m] for i in sorted(rows)]) for m in METRICS}
        s["exact"] = next(iter(rows.values())).get("exact", True)
        if name != reference and ref:
            common = sorted(set(rows) & set(ref))
            s["tests"] = {m: tests(ref, rows, common, m) for m in ("ppl", "entropy")}
        out[name] = s
    return out


def tests(ref: dict[int, dict], rows: dict[int, dict], common: list[int], metric: str) -> dict:
    """p-values of every test plus the difference of means, its 95% CI and the detectable
    difference (80% power), on the sequences both samplers finished (paired)."""
    a = [ref[i][metric] for i in common]
    b = [rows[i][metric] for i in common]
    return {**compare(a, b), **difference(a, b)}
