"""Train a draft head (``assd.heads``) on a frozen AS-ARM: one command after the target's training.

    python -m training.train_head assd/pretrained/prose --data ../shared/data/text/wiki_train_full_00.jsonl.xz \\
        --val-data ../shared/data/text/wiki_valid.jsonl.xz --max-time 120 --out runs/head_prose

The head learns to predict what the target would: for every masked rank r of a batch (random
visible subsets, masked positions left to right or in random order), a distance d ~ U{0..k} is
drawn and the head sees ranks < r - d through the target's final content states and ranks
r - d .. r-1 as tokens (what it sees at inference, d tokens after the last verified state). The
loss is KL(p_target || q_head), both with the sampler's forbidden ids removed; the figure that
matters, the acceptance probability sum_x min(p, q) of a proposal, is logged per distance.
Writes ``draft_head.safetensors`` (int8) and ``draft_head.json`` into ``--out`` (and into the
target's folder with ``--install``), plus ``head_metrics.csv`` and ``head_summary.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from assd.heads import CONFIG_FILE, WEIGHTS_FILE, DraftHead, HeadConfig, load_head
from assd.loading import load
from assd.probs import forbidden_bias

from .data import ChunkStream, pack, read_texts, tokenize
from .fast_model import FastXLNet
from .objective import sample_orders
from .schedule import lr_at, n_masked_of
from .seeds import mix_seed
from .tokenizer import eod_id


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m training.train_head",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a("target", help="the trained model's folder (weights + tokenizer), e.g. assd/pretrained/prose")
    a("--data", required=True, help="training text (local .jsonl/.txt files, comma-separated)")
    a("--val-data", default=None, help="validation text (default: every 50th training document)")
    a("--text-field", default="text")
    a("--max-docs", type=int, default=None)
    a("--seq-len", type=int, default=256)
    a("--batch-size", type=int, default=64)
    a("--k", type=int, default=5, help="largest distance d (the sampler's proposals per round)")
    a("--d-inner", type=int, default=None, help="FFN width (default 2 x d_model)")
    a("--n-layer", type=int, default=1)
    a(
        "--init-head",
        default=None,
        help="start from the head saved in this folder (e.g. the head of the model the target "
        "was fine-tuned from); its shape is used and --d-inner/--n-layer are ignored",
    )
    a("--lr", type=float, default=1e-3)
    a("--warmup-steps", type=int, default=100)
    a("--max-steps", type=int, default=100_000)
    a("--max-time", type=float, default=None, help="seconds from start (plans the step count)")
    a("--rate-min", type=float, default=0.3, help="masking rates drawn in [rate-min, rate-max]")
    a("--rate-max", type=float, default=0.97)
    a("--eval-every", type=int, default=200)
    a("--eval-chunks", type=int, default=64)
    a("--seed", type=int, default=0)
    a("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a("--out", default="runs/head")
    a("--install", action="store_true", help="also copy the head into the target's folder")
    a("--no-progress", dest="progress", action="store_false")
    return p.parse_args(argv)


def head_batch(x, step_seed: int, cfg, K: int):
    """Orders (half left to right, half random), and per masked row its distance d (0..K).

    Returns (sigma [B, L], n_prompt [B], targets [B, L] bool, q_feat [B, L])."""
    B, L = x.shape
    g = torch.Generator().manual_seed(step_seed)
    rates = cfg.rate_min + (cfg.rate_max - cfg.rate_min) * torch.rand(B, generator=g)
    n_masked = n_masked_of(rates, L)
    half = B // 2
    s1, p1 = sample_orders(n_masked[:half], L, "left-to-right", g)
    s2, p2 = sample_orders(n_masked[half:], L, "random", g)
    sigma, n_prompt = torch.cat([s1, s2]), torch.cat([p1, p2])
    targets = sigma >= n_prompt[:, None]
    d = torch.randint(0, K + 1, (B, L), generator=g)
    q_feat = torch.maximum(sigma - d, n_prompt[:, None])
    return sigma, n_prompt, targets, q_feat


def head_logits(head: DraftHead, content, emb, tokens, sigma, q_feat):
    """[B, L, V]: every position as a query (rank sigma, context sigma, feature boundary q_feat);
    the batched training form of ``assd.heads.reference_draft_logits``."""
    B, L = tokens.shape
    pos = torch.arange(L, device=tokens.device).expand(B, L)
    u = torch.cat([head.feature_inputs(content), head.token_inputs(F.embedding(tokens, emb))], 1)
    s = torch.cat([sigma, sigma], 1)[:, None, :]  # [B, 1, 2L]
    as_state = torch.arange(2 * L, device=tokens.device) < L
    f, c = q_feat[:, :, None], sigma[:, :, None]
    visible = torch.where(as_state, s < f, (s >= f) & (s < c))  # never a row's own token
    return head.attend(
        pos, head.keys(u), torch.cat([pos, pos], 1), visible, head.rel_tables(L), emb
    )


def losses(target: FastXLNet, head: DraftHead, x, sigma, n_prompt, targets, q_feat, bias, K):
    """(KL sum, acceptance sum per distance [K+1], rows per distance [K+1], number of rows)."""
    net = target.net
    with torch.no_grad():
        content, g = target.states(x, sigma, n_prompt)
        p_logits = net.lm_loss(g[targets]).float() + bias
        p = p_logits.softmax(-1)
    emb = net.transformer.word_embedding.weight
    q_logits = head_logits(head, content.detach(), emb.detach(), x, sigma, q_feat)[targets]
    log_q = (q_logits.float() + bias).log_softmax(-1)
    finite_log_q = torch.where(torch.isfinite(log_q), log_q, 0.0)  # forbidden ids: p = 0 there
    kl = (torch.xlogy(p, p) - p * finite_log_q).sum(-1)  # [N]
    accept = torch.minimum(p, log_q.exp()).sum(-1).detach()  # [N]
    d = (sigma - q_feat)[targets].clamp(max=K)
    acc_d = torch.zeros(K + 1, device=x.device).index_add_(0, d, accept)
    n_d = torch.zeros(K + 1, device=x.device).index_add_(0, d, torch.ones_like(accept))
    return kl.sum(), acc_d, n_d, kl.numel()


def main(argv=None) -> dict:
    cfg = parse(argv)
    t0 = time.time()
    device = torch.device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    loaded = load(cfg.target, backend="reference", device=device)
    net, tok = loaded.model.net.float(), loaded.tokenizer
    net.requires_grad_(False).eval()
    target = FastXLNet(net)
    V, d = net.config.vocab_size, net.config.d_model
    bias = forbidden_bias(loaded.model.forbidden_ids, V, device, torch.float32)

    docs = list(read_texts(cfg.data, text_field=cfg.text_field, max_docs=cfg.max_docs))
    if cfg.val_data:
        val_docs = list(read_texts(cfg.val_data, text_field=cfg.text_field))
    else:
        docs, val_docs = [t for i, t in enumerate(docs) if i % 50 != 49], docs[49::50]
    chunks = pack(tokenize(tok, docs), eod_id(tok), cfg.seq_len)
    val = pack(tokenize(tok, val_docs), eod_id(tok), cfg.seq_len)[: cfg.eval_chunks]
    stream = ChunkStream(chunks, cfg.batch_size, cfg.seed)
    print(f"data: {len(chunks)} chunks, {len(val)} validation chunks; {time.time() - t0:.0f}s")

    hc = HeadConfig(
        d_model=d,
        vocab_size=V,
        n_head=max(1, d // 64),
        d_head=64,
        d_inner=cfg.d_inner or 2 * d,
        n_layer=cfg.n_layer,
        clamp_len=int(net.config.clamp_len),
        eps=float(net.config.layer_norm_eps),
    )
    if cfg.init_head:
        try:
            head = load_head(cfg.init_head, device=device)
        except (OSError, ValueError, RuntimeError) as e:  # missing or unreadable weights
            raise SystemExit(f"--init-head {cfg.init_head}: cannot load its head: {e}") from e
        if head is None:
            raise SystemExit(f"--init-head {cfg.init_head}: no draft head (draft_head.json) there")
        c = head.config
        if (c.d_model, c.vocab_size, c.clamp_len) != (d, V, hc.clamp_len):
            raise SystemExit(
                f"--init-head {cfg.init_head}: a head for d_model {c.d_model}, vocab "
                f"{c.vocab_size}, clamp_len {c.clamp_len}; the target has d_model {d}, vocab "
                f"{V}, clamp_len {hc.clamp_len}"
            )
        hc = head.config
        head.requires_grad_(True).train()
    else:
        head = DraftHead(hc).to(device)
    n_params = sum(p.numel() for p in head.parameters())
    print(f"head: {n_params / 1e6:.2f} M parameters ({hc})")
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.01)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    K = cfg.k

    def evaluate() -> dict:
        head.eval()
        acc, n = torch.zeros(K + 1, device=device), torch.zeros(K + 1, device=device)
        with torch.no_grad(), amp:
            for s in range(0, len(val), cfg.batch_size):
                xb = val[s : s + cfg.batch_size].to(device)
                sig, npr, tg, qf = head_batch(xb.cpu(), mix_seed(cfg.seed, 7, s), cfg, K)
                _, a, c, _ = losses(
                    target,
                    head,
                    xb,
                    sig.to(device),
                    npr.to(device),
                    tg.to(device),
                    qf.to(device),
                    bias,
                    K,
                )
                acc, n = acc + a, n + c
        head.train()
        per = (acc / n.clamp(min=1)).tolist()
        return {"acceptance": float(acc.sum() / n.sum()), "by_distance": [round(v, 4) for v in per]}

    rows, max_steps, plan_at = [], cfg.max_steps, None
    metrics = open(out / "head_metrics.csv", "w", newline="")
    writer = csv.DictWriter(
        metrics,
        ["step", "kl", "train_acceptance", "val_acceptance", "val_by_distance", "lr", "elapsed_s"],
    )
    writer.writeheader()
    bar = tqdm(total=max_steps, disable=not cfg.progress, desc="head")
    step, ev, t_probe = 0, {}, time.time()

    def log_eval(step: int, **train) -> dict:
        """Evaluate the head and write one metrics row (training figures where there are some)."""
        ev = evaluate()
        row = {
            "step": step,
            **train,
            "val_acceptance": round(ev["acceptance"], 4),
            "val_by_distance": " ".join(map(str, ev["by_distance"])),
            "elapsed_s": round(time.time() - t0, 1),
        }
        writer.writerow(row)
        metrics.flush()
        rows.append(row)
        print(json.dumps(row), flush=True)
        return ev

    if max_steps == 0:  # --max-steps 0: evaluate the (initial) head only
        ev = log_eval(0)
    loss = torch.zeros(())
    while step < max_steps:
        lr = lr_at(step, cfg.lr, cfg.warmup_steps, max_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        x = stream.batch(step)
        sig, npr, tg, qf = head_batch(x, mix_seed(cfg.seed, 1, step), cfg, K)
        with amp:
            kl, acc_d, n_d, N = losses(
                target,
                head,
                x.to(device),
                sig.to(device),
                npr.to(device),
                tg.to(device),
                qf.to(device),
                bias,
                K,
            )
        loss = kl / max(N, 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        opt.step()
        step += 1
        bar.update(1)
        if cfg.max_time and step == 10:
            t_probe = time.time()  # the first steps pay for warm-up: time steps 10..30
        if cfg.max_time and step == 30:  # plan the run from the measured speed
            per_step = (time.time() - t_probe) / 20
            left = cfg.max_time - (time.time() - t0) - 10  # leave time for the last evaluation
            max_steps = plan_at = min(cfg.max_steps, step + max(1, int(0.95 * left / per_step)))
            bar.total = max_steps
            print(f"planned {max_steps} steps ({per_step * 1e3:.0f} ms/step)")
        if step % cfg.eval_every == 0 or step == max_steps:
            ev = log_eval(
                step,
                kl=round(float(loss.detach()), 4),
                train_acceptance=round(float(acc_d.sum() / n_d.sum()), 4),
                lr=f"{lr:.3g}",
            )
    bar.close()
    metrics.close()
    head.save(out, int8=True)
    summary = {
        "target": cfg.target,
        "parameters": n_params,
        "steps": step,
        "planned_steps": plan_at,
        "val_acceptance": ev.get("acceptance"),
        "val_by_distance": ev.get("by_distance"),
        "seconds": round(time.time() - t0, 1),
        "config": vars(cfg),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "tokens_seen": step * cfg.batch_size * cfg.seq_len,
    }
    (out / "head_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if cfg.install:
        for f in (WEIGHTS_FILE, CONFIG_FILE):
            shutil.copy(out / f, Path(cfg.target) / f)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}))
    if not math.isfinite(float(loss.detach())):
        raise SystemExit("the head's loss is not finite")
    return summary


if __name__ == "__main__":
    main()
