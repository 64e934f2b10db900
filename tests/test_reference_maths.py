"""The sampling maths against references that share no code with the library.

Hand-computed values for the building blocks (tempered softmax with forbidden tokens, the
residual, bigram drafts), and the expected joint of every exact sampler written out here with
the chain rule over the model's raw logits (plain ``math``), at each temperature. A change in
the library's maths (e.g. multiplying logits by the temperature instead of dividing) fails here
even though it would change the samplers and ``assd.exact.sequential_joint`` alike.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from assd import ASSD, Sequential, log_likelihood, make_batch
from assd.backends import ToyASARM
from assd.exact import max_abs_difference, sampler_distribution
from assd.orders import order_with_masked_order
from assd.probs import log_probs, residual, to_probs
from assd.samplers.bigram import bigram_draft
from assd.samplers.state import init_state

LN2, LN3 = math.log(2), math.log(3)

# ---------------------------------------------------------------- building blocks


def test_to_probs_hand_values():
    x = torch.tensor([0.0, LN2, LN3])  # exp: 1, 2, 3
    assert to_probs(x, 1.0).tolist() == pytest.approx([1 / 6, 2 / 6, 3 / 6], abs=1e-7)
    # T = 0.5 doubles the logits: exp: 1, 4, 9.
    assert to_probs(x, 0.5).tolist() == pytest.approx([1 / 14, 4 / 14, 9 / 14], abs=1e-7)
    # T = 2 halves them: exp: 1, sqrt 2, sqrt 3.
    z = 1 + 2**0.5 + 3**0.5
    assert to_probs(x, 2.0).tolist() == pytest.approx([1 / z, 2**0.5 / z, 3**0.5 / z], abs=1e-7)
    # Forbidden tokens are removed before normalising (not zeroed after): 1 : 3 -> 1/4, 3/4.
    assert to_probs(x, 1.0, (1,)).tolist() == pytest.approx([1 / 4, 0.0, 3 / 4], abs=1e-7)
    assert to_probs(x, 0.5, (0,)).tolist() == pytest.approx([0.0, 4 / 13, 9 / 13], abs=1e-7)
    # An id outside the vocabulary forbids nothing.
    assert to_probs(x, 1.0, (7,)).tolist() == pytest.approx([1 / 6, 2 / 6, 3 / 6], abs=1e-7)
    # float64 stays float64, anything else is computed in float32; batched over leading dims.
    assert to_probs(x.double(), 1.0).dtype == torch.float64
    assert to_probs(x.half(), 1.0).dtype == torch.float32
    batched = to_probs(torch.stack([x, x.flip(0)])[None], 1.0)
    assert batched.shape == (1, 2, 3) and batched[0, 1].tolist() == pytest.approx(
        [0.5, 1 / 3, 1 / 6]
    )


def test_log_probs_hand_values_and_no_underflow():
    x = torch.tensor([0.0, LN2, LN3])
    want = [math.log(1 / 14), math.log(4 / 14), math.log(9 / 14)]
    assert log_probs(x, 0.5).tolist() == pytest.approx(want, abs=1e-6)
    assert log_probs(x, 1.0, (1,))[1].item() == float("-inf")
    # exp(-200) underflows float32 to 0; its log-probability is still -200 (up to log(1 + e^-200)).
    far = torch.tensor([0.0, -200.0])
    assert to_probs(far, 1.0)[1].item() == 0.0
    assert log_probs(far, 1.0).tolist() == pytest.approx([0.0, -200.0], abs=1e-4)


def test_residual_hand_values():
    p = torch.tensor([0.4, 0.4, 0.2], dtype=torch.float64)
    q = torch.tensor([0.1, 0.3, 0.6], dtype=torch.float64)
    # (p - q)^+ = 0.3, 0.1, 0 -> normalised 0.75, 0.25, 0.
    assert residual(p, q).tolist() == pytest.approx([0.75, 0.25, 0.0])
    assert residual(q, p).tolist() == pytest.approx([0.0, 0.0, 1.0])
    # p == q: rejection never happens; the residual falls back to p (any distribution would do).
    assert residual(p, p).tolist() == pytest.approx([0.4, 0.4, 0.2])
    rows = residual(torch.stack([p, q]), torch.stack([q, q]))  # batched over leading dims
    assert rows.flatten().tolist() == pytest.approx([0.75, 0.25, 0.0, 0.1, 0.3, 0.6])


def _bigram_state(tokens: list[int], masked_in_order: list[int], V: int, forbidden=()):
    L = len(tokens)
    mask = torch.zeros(L, dtype=torch.bool)
    mask[masked_in_order] = True
    sigma, P = order_with_masked_order(mask, masked_in_order)
    batch = make_batch(torch.tensor(tokens), sigma, P)
    return init_state(batch, forbidden, V), batch


def _draft(tokens, masked_in_order, V, forbidden=(), proposals=None):
    """The bigram draft for the first masked position (after ``proposals`` of this round)."""
    st, batch = _bigram_state(tokens, masked_in_order, V, forbidden)
    n = int(batch.n_prompt[0])
    cur = st.tokens.clone()
    for i, tok in enumerate(proposals or []):
        cur[0, masked_in_order[i]] = tok
    k = len(proposals or [])
    rank = torch.tensor([n + k])
    return bigram_draft(st, cur, rank, torch.tensor([n + k]), V)[0].tolist()


def test_bigram_draft_hand_values():
    # Committed pairs (positions 0-4): 1 2, 2 1, 1 3, 3 1. Position 5 follows a 1: after 1 came
    # 2 once and 3 once.
    assert _draft([1, 2, 1, 3, 1, 0], [5], V=4) == pytest.approx([0, 0, 0.5, 0.5])
    # Token 3 forbidden: only the pair 1 2 counts.
    assert _draft([1, 2, 1, 3, 1, 0], [5], V=4, forbidden=(3,)) == pytest.approx([0, 0, 1, 0])
    # Nothing ever followed a 0: the unigram counts of the committed tokens (0, 1 x2, 2, 3).
    assert _draft([1, 2, 1, 3, 0, 0], [5], V=4) == pytest.approx([0.2, 0.4, 0.2, 0.2])
    # The left neighbour is not known (position 4 is decoded later): unigrams again.
    assert _draft([1, 2, 1, 2, 0, 0], [5, 4], V=4) == pytest.approx([0, 0.5, 0.5, 0])
    # The left neighbour is this round's earlier proposal (2 at position 4): after 2 came 1
    # twice; the proposal's own pair does not count (only committed pairs do).
    got = _draft([1, 2, 1, 2, 0, 0], [4, 5], V=4, proposals=[2])
    assert got == pytest.approx([0, 1, 0, 0])
    # Nothing committed at all: uniform over the tokens that may be generated.
    assert _draft([0, 0, 0], [0, 1, 2], V=3, forbidden=(1,)) == pytest.approx([0.5, 0, 0.5])


# ---------------------------------------------------------------- the joint, from raw logits


def chain_rule_joint(model: ToyASARM, tokens, prompt, order, temperature, forbidden):
    """{completion (tokens at the masked positions in position order): probability}.

    P(x) = prod_i softmax(logits_i / T)[x_i] with forbidden tokens removed, where logits_i are the
    model's raw logits for the i-th position of ``order`` given the prompt and order[:i].
    """
    V, L = model.vocab_size, len(tokens)
    out = {}
    for xs in itertools.product(range(V), repeat=len(order)):
        seq, p = list(tokens), 1.0
        for i, (pos, x) in enumerate(zip(order, xs)):
            visible = torch.tensor([[j in prompt or j in order[:i] for j in range(L)]])
            raw = model.conditional_logits(torch.tensor([seq]), visible, torch.tensor([pos]))
            logits = raw[0].tolist()
            top = max(v for t, v in enumerate(logits) if t not in forbidden)
            w = [
                0.0 if t in forbidden else math.exp((v - top) / temperature)
                for t, v in enumerate(logits)
            ]
            p *= w[x] / sum(w)
            seq[pos] = x
        if p > 0:
            out[tuple(seq[j] for j in sorted(order))] = p
    return out


# (vocab, tokens, masked positions in decoding order, forbidden ids, model seed)
CASES = [
    (3, [0, 2, 1, 0], [3, 0, 2], (), 5),  # a custom order around one prompt token
    (4, [1, 0, 0, 0], [1, 2, 3], (3,), 9),  # left to right, a forbidden token
    (2, [0, 0, 0], [2, 0, 1], (), 2),  # nothing visible
]


def _problem(case):
    V, tokens, order, forbidden, seed = case
    model = ToyASARM(V, len(tokens), seed=seed, forbidden_ids=forbidden)
    mask = torch.zeros(len(tokens), dtype=torch.bool)
    mask[order] = True
    sigma, P = order_with_masked_order(mask, order)
    prompt = [j for j in range(len(tokens)) if j not in order]
    return model, make_batch(torch.tensor(tokens), sigma, P), prompt


def exact_samplers(t: float):
    """(sampler, the temperature of the joint it targets)."""
    return [
        (Sequential(temperature=t), t),
        (ASSD(k=2, temperature=t), t),
        (ASSD(k=3, temperature=t, draft="bigram"), t),
        (ASSD(k=2, temperature=t, bonus=True), t),
        (ASSD(k=2, temperature=t, one_call=True), t),
        (ASSD(k=2, temperature=t, untempered_oracle=True), 1.0),
    ]


# One case per temperature by default; the whole grid in the slow run.
GRID = [
    pytest.param(
        case, t, marks=[] if (case, t) in {(1, 0.5), (2, 1.0), (0, 1.7)} else [pytest.mark.slow]
    )
    for case in range(len(CASES))
    for t in (0.5, 1.0, 1.7)
]


@pytest.mark.parametrize("case, t", GRID)
def test_exact_samplers_give_the_chain_rule_joint_of_the_raw_logits(case, t):
    model, batch, prompt = _problem(CASES[case])
    V, tokens, order, forbidden, _ = CASES[case]
    joints = {T: chain_rule_joint(model, tokens, prompt, order, T, forbidden) for T in {t, 1.0}}
    for joint in joints.values():
        assert sum(joint.values()) == pytest.approx(1.0, abs=1e-12)
        assert all(not set(x) & set(forbidden) for x in joint)
    for sampler, target in exact_samplers(t):
        got = sampler_distribution(model, batch, sampler)
        assert max_abs_difference(got, joints[target]) < 1e-9, sampler


def test_the_tempered_joints_differ():
    """The reference is sharp: the three temperatures give three different joints."""
    model, _, prompt = _problem(CASES[0])
    V, tokens, order, forbidden, _ = CASES[0]
    j = [chain_rule_joint(model, tokens, prompt, order, t, forbidden) for t in (0.5, 1.0, 1.7)]
    assert max_abs_difference(j[0], j[1]) > 1e-2 and max_abs_difference(j[1], j[2]) > 1e-2


@pytest.mark.parametrize("t", [0.5, 1.0, 1.7])
def test_log_likelihood_is_the_log_of_the_chain_rule(t):
    model, batch, prompt = _problem(CASES[1])
    V, tokens, order, forbidden, _ = CASES[1]
    joint = chain_rule_joint(model, tokens, prompt, order, t, forbidden)
    for completion in [(0, 1, 2), (2, 2, 1), (1, 0, 0)]:
        filled = batch.tokens.clone()
        filled[0, sorted(order)] = torch.tensor(completion)
        got = log_likelihood(model, batch.with_tokens(filled), temperature=t)
        assert got.dtype == torch.float64
        assert float(got[0]) == pytest.approx(math.log(joint[completion]), abs=1e-9)
    filled[0, 1] = 3  # a forbidden token: probability 0
    assert float(log_likelihood(model, batch.with_tokens(filled), temperature=t)[0]) == -math.inf


class FixedLogits:
    """A protocol model that answers every query with the same float32 logits."""

    vocab_size, max_length, needs_prompt, forbidden_ids = 2, None, False, ()
    device = torch.device("cpu")

    def __init__(self, logits):
        self.row = torch.tensor(logits, dtype=torch.float32)

    def open(self, batch):
        return self

    def logits(self, tokens, n, m, q_rank, q_ctx):
        return self.row.expand(*q_rank.shape, -1).clone()


def test_log_likelihood_of_a_very_unlikely_completion_is_finite():
    """float32 probabilities underflow to 0 at exp(-200); the log-softmax does not."""
    model = FixedLogits([0.0, -200.0])
    sigma, P = order_with_masked_order(torch.tensor([False, True, True]), [1, 2])
    batch = make_batch(torch.tensor([0, 1, 0]), sigma, P)
    per_rank = log_likelihood(model, batch, per_token=True)
    assert per_rank.shape == (1, 2)
    assert per_rank[0].tolist() == pytest.approx([-200.0, 0.0], abs=1e-4)
