"""Train an XLNet any-subset autoregressive model.

    python -m training.train --data ../shared/data/text/wiki_train.jsonl.xz --preset demo ...
    accelerate launch --num_processes 2 -m training.train ...   # DDP, one process per GPU

Every option is a field of ``training.config.TrainConfig``. Writes ``<out>/metrics.csv``
(train/validation loss, learning rate, masking range, throughput), ``<out>/samples.csv`` (ASSD
infills with their network calls), checkpoints for exact resume and ``<out>/summary.json``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .config import TrainConfig, parse
from .data import ChunkStream, pack, split_docs, tokenize
from .evaluate import val_nll
from .fast_model import FastXLNet
from .model import build_model, export, freeze_unused, load_model, n_params
from .objective import OBJECTIVES, ORDERS, WEIGHTINGS, sample_orders, target_nll, weighted_loss
from .samples import infill
from .schedule import MaskSchedule, lr_at, n_masked_of
from .seeds import mix_seed
from .tokenizer import eod_id, train_bpe
from .tokenizer import load as load_tokenizer
from .tokenizer import save as save_tokenizer

METRICS = ["step", "tokens", "epoch", "lr", "mask_lo", "mask_hi", "train_loss", "val_loss",
           "grad_norm", "tok_per_s", "elapsed_s"]  # fmt: skip
SAMPLES = ["step", "i", "nfe", "generated", "prompt", "output", "original"]


def _g(x: float) -> float:
    return float(f"{x:.6g}")


def _check(cfg: TrainConfig) -> None:
    if cfg.objective not in OBJECTIVES:
        raise ValueError(f"--objective must be one of {OBJECTIVES}, got {cfg.objective!r}")
    if cfg.order not in ORDERS:
        raise ValueError(f"--order must be one of {ORDERS}, got {cfg.order!r}")
    if cfg.loss_weighting not in WEIGHTINGS:
        raise ValueError(
            f"--loss-weighting must be one of {WEIGHTINGS}, got {cfg.loss_weighting!r}"
        )
    for name in ("seq_len", "batch_size", "grad_accum", "max_steps", "log_every", "eval_every",
                 "sample_every", "save_every", "val_every_doc", "keep_checkpoints"):  # fmt: skip
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.precision not in ("auto", "bf16", "fp16", "no"):
        raise ValueError(f"--precision must be auto, bf16, fp16 or no, got {cfg.precision!r}")


def _tokenizer(cfg: TrainConfig, acc, out: Path):
    if cfg.tokenizer is not None:
        return load_tokenizer(cfg.tokenizer)
    if cfg.init is not None:
        return load_tokenizer(cfg.init, cfg.revision)
    path = out / "tokenizer"
    if acc.is_main_process and not (path / "tokenizer.json").exists():
        texts, _ = split_docs(cfg, 0, 1)  # training documents only: never the validation text
        save_tokenizer(train_bpe(texts, cfg.vocab_size, max_chars=cfg.tokenizer_chars), path)
    acc.wait_for_everyone()
    return load_tokenizer(str(path))


def _optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms, XLNet's attention biases and mask embedding."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        plain = p.dim() < 2 or "bias" in name or "norm" in name or "mask_emb" in name
        (no_decay if plain else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]  # fmt: skip
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def _batch_orders(x, step: int, c: int, cfg, sched, rank: int, device):
    """Orders and rates for micro-batch ``c``: a fresh order per sequence, seeded by (seed, rank, c).

    Returns (tokens, sigma, n_prompt) on ``device``."""
    g = torch.Generator().manual_seed(mix_seed(cfg.seed, rank, c, 1))
    rates = sched.sample(step, x.shape[0], g)
    sigma, n_prompt = sample_orders(n_masked_of(rates, x.shape[1]), x.shape[1], cfg.order, g)
    return x.to(device), sigma.to(device), n_prompt.to(device)


class _Csv:
    def __init__(self, path: Path, fields: list[str], enabled: bool, append: bool):
        self.enabled = enabled
        if not enabled:
            return
        new = not (append and path.exists())
        self.f = open(path, "a" if not new else "w", newline="", encoding="utf-8")
        self.w = csv.DictWriter(self.f, fields)
        if new:
            self.w.writeheader()

    def row(self, **kw) -> None:
        if self.enabled:
            self.w.writerow(kw)
            self.f.flush()


def train(cfg: TrainConfig) -> dict:
    """Run training; returns the summary (also written to ``<out>/summary.json``)."""
    from accelerate import Accelerator
    from accelerate.utils import broadcast_object_list

    t0 = time.time()
    _check(cfg)
    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() else "no"
    acc = Accelerator(mixed_precision=precision)
    rank, world, main = acc.process_index, acc.num_processes, acc.is_main_process
    torch.set_float32_matmul_precision("high")
    out = Path(cfg.out)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(vars(cfg), indent=2) + "\n")
    acc.wait_for_everyone()

    tokenizer = _tokenizer(cfg, acc, out)
    mask_id = tokenizer.mask_token_id
    if mask_id is None:
        raise ValueError("the tokenizer has no mask token: give a tokenizer with one (e.g. <mask>)")
    eod = eod_id(tokenizer)

    train_docs, val_docs = split_docs(cfg, rank, world)
    chunks = pack(tokenize(tokenizer, train_docs), eod, cfg.seq_len)  # [N, L] this rank's share
    val_all = pack(tokenize(tokenizer, val_docs), eod, cfg.seq_len)[: cfg.eval_chunks]
    val = val_all[rank::world]
    n_chunks = int(acc.reduce(torch.tensor(len(chunks), device=acc.device), "sum"))
    acc.print(f"data: {n_chunks} train chunks x {cfg.seq_len} tokens over {world} process(es), "
              f"{len(val_all)} validation chunks; {time.time() - t0:.1f}s")  # fmt: skip

    torch.manual_seed(cfg.seed)
    model = load_model(cfg.init, cfg.revision) if cfg.init else build_model(
        tokenizer, cfg.preset, cfg.dropout, d_model=cfg.d_model, n_layer=cfg.n_layer,
        n_head=cfg.n_head, d_inner=cfg.d_inner,
    )  # fmt: skip
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(
            f"tokenizer has {len(tokenizer)} tokens but the model only {model.config.vocab_size}"
        )
    model.config.assd_max_length = cfg.seq_len
    freeze_unused(model)
    acc.print(f"model: {n_params(model) / 1e6:.2f} M parameters, {model.config.n_layer} layers, "
              f"d_model {model.config.d_model}; precision {precision}")  # fmt: skip
    fast = FastXLNet(model)
    optimizer = _optimizer(fast, cfg)
    model, optimizer = acc.prepare(fast, optimizer)
    if cfg.compile:
        model = torch.compile(model)
    raw = acc.unwrap_model(model).net  # the Hugging Face model: checkpoints, samples, export

    state = {"step": 0, "planned_steps": None, "tokens": 0, "train_time": 0.0}
    if cfg.resume:  # the newest intact checkpoint (damaged ones are skipped with a warning)
        path, state = ckpt.resume(cfg.resume, out, raw, optimizer, rank=rank, world=world)
        acc.print(f"resumed from {path} at step {state['step']}")
    max_steps = state["planned_steps"] or cfg.max_steps

    sched = MaskSchedule(cfg.mask_start, cfg.mask_min, cfg.mask_max, cfg.mask_warmup_steps)
    stream = ChunkStream(chunks, cfg.batch_size, mix_seed(cfg.seed, rank, 3) % (1 << 31), rank)
    metrics = _Csv(out / "metrics.csv", METRICS, main, append=bool(cfg.resume))
    samples = _Csv(out / "samples.csv", SAMPLES, main, append=bool(cfg.resume))
    tok_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum * world

    best = {"val_loss": math.inf, "step": None}

    def run_eval(step: int, lr: float, train_loss: float | None, grad_norm: float | None, tps):
        t = time.time()
        v = math.nan
        if len(val_all):
            idx = list(range(rank, len(val_all), world))
            tot = val_nll(model, val, idx, len(val_all), cfg, mask_id, acc.device, acc.autocast)
            tot = acc.reduce(tot, reduction="sum")
            v = float(tot[0] / tot[1].clamp(min=1))
            model.train()
        lo, hi = sched.range_at(step)
        acc.print(f"step {step}: train loss {train_loss}, val loss {v:.4f}, tok/s {tps}, "
                  f"mask range [{lo:.3f}, {hi:.3f}], {time.time() - t0:.0f}s")  # fmt: skip
        if main and cfg.export and cfg.export_best and v < best["val_loss"]:
            best.update(val_loss=v, step=step)
            export(raw, tokenizer, cfg.export, cfg.seq_len, cfg.export_weights)
        metrics.row(step=step, tokens=state["tokens"], epoch=round(stream.epoch_of(step * cfg.grad_accum), 4),
                    lr=_g(lr),
                    mask_lo=round(lo, 4), mask_hi=round(hi, 4), train_loss=train_loss, val_loss=v,
                    grad_norm=grad_norm, tok_per_s=tps, elapsed_s=round(time.time() - t0, 2))  # fmt: skip
        return v, time.time() - t

    def run_samples(step: int) -> float:
        t = time.time()
        if main and cfg.n_samples > 0 and len(val_all):
            rows = val_all[: cfg.n_samples, : min(cfg.sample_len, cfg.seq_len)]
            for i, s in enumerate(
                infill(raw, tokenizer, rows, cfg.sample_rate, seed=cfg.seed + step)
            ):
                samples.row(step=step, i=i, nfe=s.nfe, generated=s.generated, prompt=s.prompt,
                            output=s.output, original=s.original)  # fmt: skip
            raw.train()
        acc.wait_for_everyone()
        return time.time() - t

    def save(step: int) -> float:
        t = time.time()
        trainer = dict(state, step=step, planned_steps=max_steps, config=vars(cfg))
        ckpt.save(ckpt.step_dir(out, step), raw, optimizer, trainer, rank=rank, is_main=main,
                  barrier=acc.wait_for_everyone, keep=cfg.keep_checkpoints)  # fmt: skip
        return time.time() - t

    model.train()
    start = state["step"]
    bar = tqdm(total=max_steps, initial=start, disable=not (main and cfg.progress), desc="train")
    probe_a, probe_b = start + 5, start + 30
    t_probe = t_log = time.time()
    tokens_log = state["tokens"]
    overhead = over_probe = over_log = 0.0  # seconds spent in eval, samples, checkpoints
    window_tps: list[float] = []
    step, loss_v, gnorm, val_loss = start, math.nan, math.nan, math.nan
    while step < max_steps:
        lr = lr_at(step, cfg.lr, cfg.warmup_steps, max_steps, cfg.final_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_t = torch.zeros((), device=acc.device)
        for micro in range(cfg.grad_accum):
            c = step * cfg.grad_accum + micro
            x = stream.batch(c)
            if step == start and micro == 0:
                h = hashlib.sha1(x.numpy().tobytes()).hexdigest()[:16]
                print(f"[rank {rank}/{world}] first batch sha1 {h} (micro-batch {c})", flush=True)
            tokens, sigma, n_prompt = _batch_orders(x, step, c, cfg, sched, rank, acc.device)
            sync = micro == cfg.grad_accum - 1
            with acc.autocast(), contextlib.nullcontext() if sync else acc.no_sync(model):
                nll, rows = target_nll(model, tokens, sigma, n_prompt, cfg.objective, mask_id)
                total, weight = weighted_loss(nll, rows, len(tokens), cfg.loss_weighting)
                loss = total / weight.clamp(min=1) / cfg.grad_accum
                acc.backward(loss)
            loss_t += loss.detach()
        gn = acc.clip_grad_norm_(model.parameters(), cfg.clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        state["tokens"] += tok_per_step
        bar.update(1)

        if (
            cfg.max_time is not None
            and state["planned_steps"] is None
            and step in (probe_a, probe_b)
        ):
            # Plan the run from the measured speed so that it ends inside the time budget.
            acc.wait_for_everyone()
            if step == probe_a:
                t_probe, over_probe = time.time(), overhead
            else:
                per_step = (time.time() - t_probe - (overhead - over_probe)) / (probe_b - probe_a)
                left = cfg.max_time - (time.time() - t0)
                plan = [min(cfg.max_steps, step + max(1, int(0.9 * left / per_step)))]
                broadcast_object_list(plan)
                max_steps = state["planned_steps"] = plan[0]
                bar.total = max_steps
                bar.refresh()
                acc.print(
                    f"planned {max_steps} steps ({per_step * 1e3:.1f} ms/step, {left:.0f}s left)"
                )

        if step % cfg.log_every == 0 or step == max_steps:
            loss_v = float(acc.reduce(loss_t, "mean"))
            gnorm = float(gn)
            now = time.time()
            dt = now - t_log - (overhead - over_log)
            tps = (state["tokens"] - tokens_log) / dt if dt > 0 else math.nan
            state["train_time"] += max(dt, 0.0)
            t_log, tokens_log, over_log = now, state["tokens"], overhead
            if step > probe_a:
                window_tps.append(tps)
            bar.set_postfix(loss=f"{loss_v:.3f}", val=f"{val_loss:.3f}", tok_s=f"{tps:,.0f}")
            if step % cfg.eval_every and step != max_steps:
                metrics.row(step=step, tokens=state["tokens"], epoch=round(stream.epoch_of(c), 4),
                            lr=_g(lr), mask_lo=round(sched.range_at(step)[0], 4),
                            mask_hi=round(sched.range_at(step)[1], 4), train_loss=loss_v,
                            grad_norm=gnorm, tok_per_s=round(tps), elapsed_s=round(now - t0, 2))  # fmt: skip
            if cfg.max_time is not None:
                late = torch.tensor(float(now - t0 > cfg.max_time), device=acc.device)
                if float(acc.reduce(late, "sum")) > 0:  # hard stop (the plan was too optimistic)
                    acc.print(f"time budget reached at step {step}: stopping")
                    max_steps = step
        if step % cfg.eval_every == 0 or step == max_steps:
            tps_now = round(tps) if step % cfg.log_every == 0 else None
            val_loss, dt = run_eval(step, lr, loss_v, gnorm, tps_now)
            overhead += dt
        if step % cfg.sample_every == 0 or step == max_steps:
            overhead += run_samples(step)
        if step % cfg.save_every == 0 or step == max_steps:
            overhead += save(step)
    bar.close()

    summary = {
        "steps": step,
        "tokens_seen": state["tokens"],
        "final_train_loss": loss_v,
        "final_val_loss": val_loss,
        "train_time_s": round(state["train_time"], 1),
        "wall_time_s": round(time.time() - t0, 1),
        "tokens_per_s": round(state["tokens"] / max(state["train_time"], 1e-9)),
        "tokens_per_s_steady": round(sorted(window_tps)[len(window_tps) // 2])
        if window_tps
        else None,
        "processes": world,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "parameters": n_params(raw),
        "precision": precision,
        "exported_step": best["step"] if cfg.export_best else step,
        "exported_val_loss": best["val_loss"] if cfg.export_best else val_loss,
    }
    if main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if cfg.export and not cfg.export_best:
            export(raw, tokenizer, cfg.export, cfg.seq_len, cfg.export_weights)
        acc.print(json.dumps(summary))
    acc.wait_for_everyone()
    acc.end_training()
    return summary


def main(argv: list[str] | None = None) -> dict:
    return train(parse(argv))


if __name__ == "__main__":
    main()
