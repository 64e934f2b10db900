"""Generative perplexity and unigram entropy of generated sequences.

The paper scores generations with GPT-2 Large (``gpt2-large``): perplexity of the decoded text
(a BOS token prepended, at most 960 tokens, as the ``evaluate`` perplexity metric does) and the
unigram entropy of its GPT-2 tokens. Offline, where GPT-2 Large cannot be fetched, the documented
stand-in is the generating model itself: the exact left-to-right log-likelihood of the sequence
(``assd.log_likelihood`` with the order 0, 1, ..., L-1 and position 0 visible), i.e.
PPL = exp(-log p(x_1..x_{L-1} | x_0) / (L-1)), and the entropy of the model's own token ids.
Stand-in numbers compare samplers with each other; they are not comparable to the paper's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

import assd

from .metrics import perplexity, unigram_entropy

EVALUATORS = ("auto", "self", "gpt2-large")


@dataclass
class Score:
    ppl: float
    entropy: float
    n_tokens: int


class SelfEvaluator:
    """The generating model's exact left-to-right likelihood (offline stand-in for GPT-2 Large)."""

    def __init__(self, lm: assd.Loaded):
        self.model = lm.model
        self.name = f"self: left-to-right log-likelihood under {lm.name}"

    @torch.no_grad()
    def __call__(self, tokens: list[int], text: str) -> Score:
        L = len(tokens)
        if L < 2:
            raise ValueError("need at least 2 tokens to score a sequence")
        batch = assd.make_batch(torch.tensor(tokens), torch.arange(L), 1)
        ll = float(assd.log_likelihood(self.model, batch)[0])
        return Score(perplexity(ll, L - 1), unigram_entropy(tokens), L - 1)


class CausalLMEvaluator:
    """A Hugging Face causal LM (GPT-2 Large in the paper) scoring decoded text."""

    MAX_TOKENS = 960

    def __init__(self, name: str, device: torch.device | str, local_only: bool):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
        self.model = AutoModelForCausalLM.from_pretrained(name, local_files_only=local_only)
        self.model = self.model.to(device).eval()
        self.device = torch.device(device)
        self.name = name

    @torch.no_grad()
    def __call__(self, tokens: list[int], text: str) -> Score:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        entropy = unigram_entropy(ids)
        ids = ids[: self.MAX_TOKENS]
        bos = self.tokenizer.bos_token_id
        x = torch.tensor([([bos] if bos is not None else []) + ids], device=self.device)
        logits = self.model(x).logits[0, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, x[0, 1:, None])[:, 0]
        return Score(perplexity(float(lp.sum()), len(lp)), entropy, len(lp))


def make_evaluator(choice: str, lm: assd.Loaded, online: bool):
    """-> (evaluator, note). ``auto``: GPT-2 Large if it is cached (or ``online``), else ``self``."""
    if choice not in EVALUATORS and not choice.strip():
        raise ValueError(f"evaluator must be one of {EVALUATORS} or a causal LM id")
    if choice == "self":
        return SelfEvaluator(lm), "self (offline stand-in, see evals/evaluator.py)"
    name = "gpt2-large" if choice == "auto" else choice
    local_only = not online or os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        ev = CausalLMEvaluator(name, lm.model.device, local_only)
        return ev, name
    except (OSError, ValueError) as e:
        if choice != "auto":
            raise ValueError(
                f"could not load the evaluator {name!r} ({str(e).splitlines()[0]}): "
                "run with --online, or --evaluator self"
            ) from e
        why = "not cached and offline" if local_only else str(e).splitlines()[0]
        return SelfEvaluator(lm), f"self (offline stand-in: {name} unavailable, {why})"
