"""The front door: marked-up text in, completed text and its statistics out, in one call.

    >>> out = assd.infill("The old lighthouse [MASK:12] over the harbour.", model="prose", seed=0)
    >>> out.text, out.calls, out.tokens_per_call, out.log_likelihood

It does what a researcher would write by hand (``parse_markup``, ``infills_to_batch``,
``sample``, ``log_likelihood``, ``decode``) with the checks a caller needs: every bad argument
raises a ValueError or TypeError that names the argument and says how to fix it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .likelihood import log_likelihood
from .loading import EMBEDDED, Loaded, load, resolve
from .samplers import ASSD, MeanField, Sequential, fastest, sample
from .text import MarkupError, decode, infills_to_batch, parse_markup, width_step

SAMPLERS = ("fastest", "assd", "one-call", "sequential", "mean-field")
DEFAULT_K = 5  # proposals per round when a sampler that takes k is named without one


@dataclass(frozen=True)
class Infilled:
    """One completed text and how it was obtained.

    text: the input with every mask filled in. fills: the generated text of each masked span
    (contiguous run of masked tokens), in reading order. hidden: the originals of ``[HIDE]``
    spans. calls: network calls (NFE). rounds: sampler rounds. tokens: tokens generated.
    log_likelihood: the model's exact log-probability of the generated tokens given the visible
    ones, in nats, along the decoding order (temperature 1). sampler: the sampler's name.
    """

    text: str
    fills: tuple[str, ...]
    hidden: tuple[str, ...]
    calls: int
    rounds: int
    tokens: int
    log_likelihood: float
    sampler: str

    @property
    def tokens_per_call(self) -> float:
        return self.tokens / max(self.calls, 1)

    def __str__(self) -> str:
        return self.text


def infill(
    text: str | Sequence[str],
    model: str | Loaded = "prose",
    *,
    sampler: str | object = "fastest",
    k: int | None = None,
    temperature: float | None = None,
    order: str = "left-to-right",
    seed: int | None = None,
    generator: torch.Generator | None = None,
    revision: str | None = None,
) -> Infilled | list[Infilled]:
    """Fill the masks of ``text`` (``[MASK]``, ``[MASK:n]``, ``[HIDE]text[/HIDE]``, see
    ``assd.text``) with exact samples from ``model``; a list of texts is sampled as one batch.

    model: "prose" or "code" (embedded), a local directory, a Hub id (with ``revision``) or a
    model from :func:`assd.load`. sampler: "fastest" (the library's fastest exact sampler for
    this model and device), "assd" (the paper's), "one-call", "sequential", "mean-field" (NOT
    exact: unverified parallel decoding, for comparison) or a sampler object such as
    ``assd.ASSD(k=8)``. k: proposals (or tokens, for mean-field) per round. order:
    "left-to-right" among the masks (the paper's convention) or "random". seed or generator:
    reproducible draws.
    """
    texts, single = _texts(text)
    lm = _model(model, revision)
    g = _generator(seed, generator)
    smp = make_sampler(sampler, lm.model, k, temperature)
    infills = []
    for i, t in enumerate(texts):
        arg = "text" if single else f"text[{i}]"
        try:
            inf = parse_markup(t, lm.tokenizer, max_length=lm.model.max_length)
        except MarkupError as e:
            raise MarkupError(f"{arg}: {e}") from None
        if lm.model.needs_prompt and all(inf.mask):
            raise ValueError(
                f"{arg}: everything is masked, and the model needs some visible text to "
                "condition on: mask less"
            )
        infills.append(inf)
    if not isinstance(order, str):
        raise TypeError(f"order must be 'left-to-right' or 'random', got {type(order).__name__}")
    batch = infills_to_batch(
        infills,
        order=order,
        generator=g,
        pad_to=width_step(lm.model),  # compiled rounds: few widths, few compilations
        max_length=lm.model.max_length,
    )
    results = sample(lm.model, batch, smp, generator=g, trace=False)
    done = batch.with_tokens(torch.tensor([r.tokens for r in results], dtype=torch.long))
    lls = log_likelihood(lm.model, done).tolist()
    out = [
        Infilled(
            text=decode(lm.tokenizer, r.tokens, length=len(inf.ids)),
            fills=tuple(_fills(lm.tokenizer, r.tokens, inf.mask)),
            hidden=tuple(inf.hidden),
            calls=r.nfe,
            rounds=r.rounds,
            tokens=r.n_generated,
            log_likelihood=float(ll),
            sampler=smp.name,
        )
        for inf, r, ll in zip(infills, results, lls)
    ]
    return out[0] if single else out


def make_sampler(
    sampler: str | object, model, k: int | None = None, temperature: float | None = None
):
    """A sampler by name (see :func:`infill`), or the given sampler object as it is."""
    t = 1.0 if temperature is None else temperature
    if not isinstance(sampler, str):
        if not (hasattr(sampler, "init") and hasattr(sampler, "step")):
            raise TypeError(
                f"sampler must be one of {SAMPLERS} or a sampler object such as assd.ASSD(k=5), "
                f"got {type(sampler).__name__}"
            )
        if k is not None or temperature is not None:
            raise ValueError(
                "k and temperature go to the sampler object itself (e.g. assd.ASSD(k=8, "
                "temperature=0.7)), not to infill, when sampler is an object"
            )
        return sampler
    if sampler == "fastest":
        if k is not None:
            raise ValueError(
                "k: the fastest sampler chooses its own k; name a sampler to set it "
                "(sampler='assd' or 'one-call')"
            )
        return fastest(model, temperature=t)
    kk = DEFAULT_K if k is None else k
    if sampler == "assd":
        return ASSD(k=kk, temperature=t)
    if sampler == "one-call":
        return ASSD(k=kk, temperature=t, one_call=True)
    if sampler == "mean-field":
        return MeanField(k=kk, temperature=t)
    if sampler == "sequential":
        if k is not None:
            raise ValueError("k: sequential decoding takes no k (one token per call)")
        return Sequential(temperature=t)
    raise ValueError(f"sampler must be one of {SAMPLERS} or a sampler object, got {sampler!r}")


def _texts(text) -> tuple[list[str], bool]:
    if isinstance(text, str):
        return [text], True
    if not isinstance(text, (list, tuple)):
        raise TypeError(f"text must be a str or a list of str, got {type(text).__name__}")
    if not text:
        raise ValueError("text: the list is empty: give at least one text to infill")
    for i, t in enumerate(text):
        if not isinstance(t, str):
            raise TypeError(f"text[{i}] must be a str, got {type(t).__name__}")
    return list(text), False


def _model(model, revision: str | None) -> Loaded:
    if isinstance(model, Loaded):
        return model
    if not isinstance(model, str):
        raise TypeError(
            f"model must be a name such as 'prose', a directory, a Hub id or an assd.load() "
            f"result, got {type(model).__name__}"
        )
    name = model.strip()
    try:
        path, local = resolve(name)
    except ValueError as e:
        raise ValueError(f"model: {e}") from None
    if not local and "/" not in name:
        raise ValueError(
            f"model: unknown model {name!r}: use {' or '.join(map(repr, EMBEDDED))} (embedded), "
            "a local directory, or a Hub id such as 'therealgabeguo/ASARM' with a revision"
        )
    try:
        return _load(name, revision)
    except ValueError as e:
        raise ValueError(f"model: {e}") from None


@functools.lru_cache(maxsize=2)
def _load(name: str, revision: str | None) -> Loaded:
    """Models stay loaded between calls (the two most recent)."""
    return load(name, revision)


def _generator(seed, generator) -> torch.Generator | None:
    if generator is not None:
        if seed is not None:
            raise ValueError("seed and generator: give one of them, not both")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return generator
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must lie in [0, 2**63), got {seed}")
    return torch.Generator().manual_seed(seed)


def _fills(tokenizer, tokens: list[int], mask: list[bool]) -> list[str]:
    """The generated text of each contiguous run of masked positions."""
    out, run = [], []
    for t, m in zip(tokens, mask):
        if m:
            run.append(t)
        elif run:
            out.append(decode(tokenizer, run))
            run = []
    if run:
        out.append(decode(tokenizer, run))
    return out
