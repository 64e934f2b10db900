"""The XLNet reference backend: masks by definition, one target at a time, loading round trip."""

from __future__ import annotations

import torch
from conftest import make_tiny_xlnet
from hypothesis import given, settings
from hypothesis import strategies as st

import assd
from assd.backends import XLNetReference


def brute_force(net, tokens, sigma, P, rank, ctx):
    """Logits of one query (rank, ctx), with perm_mask written out pair by pair from the definition."""
    L = tokens.shape[0]
    pos = int((sigma == rank).nonzero())
    perm = torch.ones(1, L, L)
    for i in range(L):
        for j in range(L):
            si, sj = int(sigma[i]), int(sigma[j])
            if i == pos:
                sees = sj < ctx
            elif si < P:
                sees = sj < P
            else:
                sees = sj < si
            perm[0, i, j] = 0.0 if sees else 1.0
    tm = torch.zeros(1, 1, L)
    tm[0, 0, pos] = 1
    return net(input_ids=tokens[None], perm_mask=perm, target_mapping=tm, use_mems=False).logits[
        0, 0
    ]


@settings(max_examples=12, deadline=None)
@given(st.integers(2, 10), st.integers(0, 1000), st.data())
def test_queries_match_brute_force(L, seed, data):
    torch.manual_seed(seed)
    net = make_tiny_xlnet(20, seed=seed % 7)
    P = data.draw(st.integers(1, L - 1))
    sigma = torch.randperm(L)
    tokens = torch.randint(0, 20, (L,))
    batch = assd.make_batch(tokens, sigma, P)
    # A query set with repeated ranks and contexts shorter than ranks (what one-call ASSD sends).
    n = data.draw(st.integers(P, L - 1))
    m = data.draw(st.integers(0, L - n))
    qs = data.draw(
        st.lists(
            st.integers(n, L - 1).flatmap(
                lambda r: st.tuples(st.just(r), st.integers(P, min(r, n + m)))
            ),
            min_size=1,
            max_size=8,
        )
    )
    q_rank = torch.tensor([[r for r, _ in qs]])
    q_ctx = torch.tensor([[c for _, c in qs]])
    got = (
        XLNetReference(net)
        .open(batch)
        .logits(tokens[None], torch.tensor([n]), torch.tensor([m]), q_rank, q_ctx)
    )
    with torch.no_grad():
        for i, (r, c) in enumerate(qs):
            want = brute_force(net, tokens, sigma, P, r, c)
            assert torch.allclose(got[0, i], want, atol=1e-5), (r, c)


def test_load_round_trip(tiny_model_dir):
    from transformers import XLNetLMHeadModel

    net = XLNetLMHeadModel.from_pretrained(tiny_model_dir)
    lm = assd.load(tiny_model_dir, backend="reference", device="cpu")
    assert isinstance(lm.model, XLNetReference)
    assert lm.model.max_length == 64
    assert lm.tokenizer.mask_token_id in lm.model.forbidden_ids
    tokens = torch.randint(6, lm.model.vocab_size, (2, 8))
    sigma, P = assd.order_from_mask(torch.tensor([[False, True] * 4] * 2))
    batch = assd.make_batch(tokens, sigma, P)
    q = torch.tensor([[4, 5], [6, 7]])
    n = torch.tensor([4, 4])
    a = lm.model.open(batch).logits(tokens, n, n - n + 4, q, q)
    b = XLNetReference(net).open(batch).logits(tokens, n, n - n + 4, q, q)
    assert torch.equal(a, b)


def test_unknown_models_give_clear_errors(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="no model directory"):
        assd.load("./does/not/exist")
    with pytest.raises(ValueError, match="could not load"):
        assd.load(str(tmp_path))  # a directory without a model
    with pytest.raises(ValueError, match="backend"):
        assd.load(str(tmp_path), backend="fast")


def test_joint_masks_give_the_chain_rule_in_one_forward():
    """``assd.masks.joint_masks``: one plain Hugging Face forward scores every masked token given
    the prompt and the lower ranks, the oracle queries (r, r) of the reference backend."""
    from assd.masks import joint_masks

    net = make_tiny_xlnet(20, seed=4)
    g = torch.Generator().manual_seed(4)
    B, L = 3, 9
    sigma = torch.stack([torch.randperm(L, generator=g) for _ in range(B)])
    P, length = torch.tensor([2, 5, 1]), torch.tensor([9, 9, 7])
    sigma[2, 7:] = torch.tensor([7, 8])  # row 2: padding at positions 7, 8 takes ranks 7, 8
    sigma[2, :7] = torch.randperm(7, generator=g)
    tokens = torch.randint(0, 20, (B, L), generator=g)
    perm, tm, pos = joint_masks(sigma, P, length)
    assert pos.shape == (B, 7) and (pos[1] >= 0).sum() == 4 and (pos[2] >= 0).sum() == 6
    with torch.no_grad():
        got = net(input_ids=tokens, perm_mask=perm, target_mapping=tm, use_mems=False).logits
    batch = assd.make_batch(tokens, sigma, P, length)
    q = P[:, None] + torch.arange(7)
    q = torch.where(q < length[:, None], q, -1)
    want = XLNetReference(net).open(batch).logits(tokens, P, length - P, q, q)
    valid = pos >= 0
    assert torch.allclose(got[valid], want[valid], atol=1e-5)
