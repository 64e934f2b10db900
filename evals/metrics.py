"""Quality metrics: ROUGE, unigram entropy, perplexity, pass@k (no network, no model)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
    """Per-pair ROUGE-1/2/L F-measure x100 (``rouge_score``, no stemming: as ``evaluate``'s default)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=False)
    out = []
    for p, r in zip(predictions, references):
        s = scorer.score(r, p)  # (target, prediction)
        out.append({k: 100.0 * s[k].fmeasure for k in ROUGE_KEYS})
    return out


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L x100 over pairs, plus their average (the paper's rougeAvg)."""
    per = rouge_scores(predictions, references)
    if not per:
        return {k: float("nan") for k in (*ROUGE_KEYS, "rougeAvg")}
    mean = {k: sum(s[k] for s in per) / len(per) for k in ROUGE_KEYS}
    mean["rougeAvg"] = sum(mean[k] for k in ROUGE_KEYS) / 3
    return mean


def unigram_entropy(tokens: Sequence[int]) -> float:
    """Entropy in bits of the empirical unigram distribution of one sequence (the paper's entropy)."""
    n = len(tokens)
    if n == 0:
        return float("nan")
    return -sum(c / n * math.log2(c / n) for c in Counter(tokens).values())


def perplexity(log_prob: float, n_tokens: int) -> float:
    """exp(-log p / n) from a total natural-log probability over n predicted tokens."""
    if n_tokens < 1:
        raise ValueError(f"n_tokens must be >= 1, got {n_tokens}")
    return math.exp(-log_prob / n_tokens)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al., 2021)."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"need 0 <= c <= n and k >= 1, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))
