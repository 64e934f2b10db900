"""Train an XLNet any-subset autoregressive model.

    python -m training.train --data ../shared/data/text/wiki_train.jsonl.xz --preset demo ...
    accelerate launch --multi_gpu --num_processes 2 -m training.train ...   # DDP, one process per GPU

Every option is a field of ``training.config.TrainConfig``. Writes ``<out>/metrics.csv``
(train/validation loss, learning rate, masking range, throughput), ``<out>/samples.csv`` (ASSD
infills with their network calls), checkpoints for exact resume and ``<out>/summary.json``.

The loop is flat: one optimizer step (``train_step``), then whatever is due at that step:
the time-budget plan (``plan_steps``), validation (``evaluate``), one metrics row (``log``),
samples, a checkpoint.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .config import TrainConfig, parse
from .data import ChunkStream, pack, split_docs, tokenize
from .evaluate import val_nll
from .fast_model import FastXLNet
from .model import build_model, export, freeze_unused, load_model, n_params
from .objective import OBJECTIVES, WEIGHTINGS, order_name, sample_orders, target_nll, weighted_loss
from .samples import infill
from .schedule import MaskSchedule, lr_at, n_masked_of
from .seeds import TAG_ORDERS, TAG_SAMPLES, mix_seed
from .tokenizer import eod_id, train_bpe
from .tokenizer import load as load_tokenizer
from .tokenizer import save as save_tokenizer

METRICS = [
    "step",
    "tokens",
    "epoch",
    "lr",
    "mask_lo",
    "mask_hi",
    "train_loss",
    "val_loss",
    "grad_norm",
    "tok_per_s",
    "elapsed_s",
]
SAMPLE_FIELDS = ["step", "i", "nfe", "generated", "prompt", "output", "original"]
PROBE = (5, 30)  # the time-budget plan measures steps start+5 .. start+30
COUNTS = (
    "seq_len",
    "batch_size",
    "grad_accum",
    "max_steps",
    "log_every",
    "eval_every",
    "sample_every",
    "save_every",
    "val_every_doc",
    "keep_checkpoints",
)


def check_config(cfg: TrainConfig) -> None:
    """ValueError naming the flag for options that cannot work."""
    if cfg.objective not in OBJECTIVES:
        raise ValueError(f"--objective must be one of {OBJECTIVES}, got {cfg.objective!r}")
    try:
        order_name(cfg.order)
    except ValueError as e:
        raise ValueError(f"--{e}") from None
    if not 0.0 <= cfg.span_fraction <= 1.0:
        raise ValueError(f"--span-fraction must lie in [0, 1], got {cfg.span_fraction}")
    if cfg.loss_weighting not in WEIGHTINGS:
        raise ValueError(
            f"--loss-weighting must be one of {WEIGHTINGS}, got {cfg.loss_weighting!r}"
        )
    for name in COUNTS:
        if getattr(cfg, name) < 1:
            flag = name.replace("_", "-")
            raise ValueError(f"--{flag} must be >= 1, got {getattr(cfg, name)}")
    if cfg.precision not in ("auto", "bf16", "fp16", "no"):
        raise ValueError(f"--precision must be auto, bf16, fp16 or no, got {cfg.precision!r}")


def plan_steps(step: int, elapsed_s: float, per_step_s: float, budget_s: float, max_steps: int):
    """The step count that ends a run inside its time budget.

    At ``step``, ``elapsed_s`` seconds after the start, with steps taking ``per_step_s``: the
    steps that fit in 90% of the time left (evaluations and checkpoints need the rest), at least
    one more, at most ``max_steps``.
    """
    if per_step_s <= 0 or not math.isfinite(per_step_s):
        return max_steps
    fit = int(0.9 * (budget_s - elapsed_s) / per_step_s)
    return min(max_steps, step + max(1, fit))


@dataclass
class Progress:
    """What a checkpoint records of the loop (``trainer.json``; schedules are functions of step)."""

    step: int = 0
    planned_steps: int | None = None  # the step count the lr schedule decays to
    tokens: int = 0  # input tokens seen, all processes
    train_time: float = 0.0  # seconds spent in training steps (evaluation etc. excluded)


class Stopwatch:
    """Training seconds: wall time minus the time spent inside ``paused()`` blocks."""

    def __init__(self):
        self.t0, self.paused_s = time.time(), 0.0

    def busy(self) -> float:
        return time.time() - self.t0 - self.paused_s

    @contextlib.contextmanager
    def paused(self):
        t = time.time()
        try:
            yield
        finally:
            self.paused_s += time.time() - t


class TimeBudget:
    """``--max-time``: plan the step count from the speed of steps start+5 .. start+30 (a fresh
    run only: a resumed run keeps its plan), and stop hard once the time is up."""

    def __init__(self, cfg: TrainConfig, t0: float, start: int, planned: bool, watch: Stopwatch):
        self.budget_s, self.max_steps, self.t0, self.watch = cfg.max_time, cfg.max_steps, t0, watch
        fresh = cfg.max_time is not None and not planned
        self.probe = (start + PROBE[0], start + PROBE[1]) if fresh else ()
        self.probe_busy = 0.0

    def plan(self, acc, step: int, total: int) -> int:
        """The step count after ``step`` (``total`` unless this step completes the probe)."""
        if step not in self.probe:
            return total
        from accelerate.utils import broadcast_object_list

        acc.wait_for_everyone()
        if step == self.probe[0]:
            self.probe_busy = self.watch.busy()
            return total
        per_step = (self.watch.busy() - self.probe_busy) / (self.probe[1] - self.probe[0])
        elapsed = time.time() - self.t0
        plan = [plan_steps(step, elapsed, per_step, self.budget_s, self.max_steps)]
        broadcast_object_list(plan)  # every rank takes the main process's plan
        acc.print(
            f"planned {plan[0]} steps ({per_step * 1e3:.1f} ms/step, "
            f"{self.budget_s - elapsed:.0f}s left)"
        )
        return plan[0]

    def exhausted(self, acc) -> bool:
        """True on every rank once some rank is past the budget (a collective)."""
        if self.budget_s is None:
            return False
        late = torch.tensor(float(time.time() - self.t0 > self.budget_s), device=acc.device)
        if float(acc.reduce(late, "sum")) == 0:
            return False
        acc.print("time budget reached: stopping")
        return True


class Meter:
    """Throughput over the windows between metrics rows, in training seconds only."""

    def __init__(self, watch: Stopwatch, tokens: int, steady_after: int):
        self.watch, self.busy, self.tokens = watch, watch.busy(), tokens
        self.steady_after = steady_after  # windows after this step count as steady
        self.window_tps: list[float] = []

    def window(self, step: int, progress: Progress) -> float:
        """Tokens/s since the previous row; adds the window's seconds to ``progress``."""
        busy = self.watch.busy()
        dt = busy - self.busy
        tps = (progress.tokens - self.tokens) / dt if dt > 0 else math.nan
        progress.train_time += dt
        self.busy, self.tokens = busy, progress.tokens
        if step > self.steady_after and math.isfinite(tps):
            self.window_tps.append(tps)
        return tps

    def steady(self) -> int | None:
        """The median tokens/s of the steady windows."""
        w = sorted(self.window_tps)
        return round(w[len(w) // 2]) if w else None


class CsvLog:
    """A CSV file written by the main process only. Resuming at step s keeps the rows of steps
    <= s (a run resumed into its own folder repeats the later steps: no duplicate rows)."""

    def __init__(self, path: Path, fields: list[str], enabled: bool, resumed_step: int | None):
        self.enabled = enabled
        if not enabled:
            return
        keep = resumed_step is not None and path.exists()
        if keep:
            with open(path, newline="", encoding="utf-8") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resumed_step]
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fields)
                w.writeheader()
                w.writerows(rows)
            os.replace(tmp, path)
        self.f = open(path, "a" if keep else "w", newline="", encoding="utf-8")
        self.w = csv.DictWriter(self.f, fields)
        if not keep:
            self.w.writeheader()

    def row(self, **kw) -> None:
        if self.enabled:
            self.w.writerow(kw)
            self.f.flush()

    def close(self) -> None:
        if self.enabled:
            self.f.close()


def _accelerator(cfg: TrainConfig):
    """(the Accelerator, the precision it runs): ``auto`` is bf16 autocast on CUDA, else float32.

    Launched as several processes on a machine without CUDA (``accelerate launch --multi_gpu``
    sets WORLD_SIZE), the processes form a gloo group on the CPU: accelerate only does that when
    asked for the CPU, otherwise each process would train alone into the same folder.
    """
    from accelerate import Accelerator

    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() else "no"
    torch.set_float32_matmul_precision("high")
    cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    return Accelerator(mixed_precision=precision, cpu=cpu), precision


def _tokenizer(cfg: TrainConfig, acc, out: Path):
    """``--tokenizer``, or ``--init``'s, or a BPE trained here on the training documents."""
    if cfg.tokenizer is not None:
        tokenizer = load_tokenizer(cfg.tokenizer)
    elif cfg.init is not None:
        tokenizer = load_tokenizer(cfg.init, cfg.revision)
    else:
        path = out / "tokenizer"
        if acc.is_main_process and not (path / "tokenizer.json").exists():
            texts, _ = split_docs(cfg, 0, 1)  # training documents only: never the validation text
            tok = train_bpe(
                texts,
                cfg.vocab_size,
                max_chars=cfg.tokenizer_chars,
                split_newlines=cfg.split_newlines,
            )
            save_tokenizer(tok, path)
        acc.wait_for_everyone()
        tokenizer = load_tokenizer(str(path))
    if tokenizer.mask_token_id is None:
        raise ValueError("the tokenizer has no mask token: give a tokenizer with one (e.g. <mask>)")
    return tokenizer


def _model(cfg: TrainConfig, tokenizer):
    """The Hugging Face model to train: ``cfg.init`` fine-tuned, or a fresh ``cfg.preset``."""
    torch.manual_seed(cfg.seed)
    if cfg.init:
        model = load_model(cfg.init, cfg.revision)
    else:
        sizes = dict(d_model=cfg.d_model, n_layer=cfg.n_layer, n_head=cfg.n_head)
        model = build_model(tokenizer, cfg.preset, cfg.dropout, d_inner=cfg.d_inner, **sizes)
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(
            f"tokenizer has {len(tokenizer)} tokens but the model only {model.config.vocab_size}"
        )
    model.config.assd_max_length = cfg.seq_len
    freeze_unused(model)
    return model


def _optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms, XLNet's attention biases and mask embedding."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        plain = p.dim() < 2 or "bias" in name or "norm" in name or "mask_emb" in name
        (no_decay if plain else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def batch_orders(x, step: int, c: int, cfg, sched, rank: int, device):
    """Orders and rates for micro-batch ``c``: a fresh order per sequence, seeded by (seed, rank, c).

    Returns (tokens, sigma, n_prompt) on ``device``."""
    g = torch.Generator().manual_seed(mix_seed(cfg.seed, rank, c, TAG_ORDERS))
    rates = sched.sample(step, x.shape[0], g)
    spans = torch.rand(x.shape[0], generator=g) < cfg.span_fraction if cfg.span_fraction else None
    sigma, n_prompt = sample_orders(n_masked_of(rates, x.shape[1]), x.shape[1], cfg.order, g, spans)
    return x.to(device), sigma.to(device), n_prompt.to(device)


def batch_digest(x: torch.Tensor) -> str:
    """A short SHA-1 of a batch of token ids (the first batches of ranks must differ)."""
    return hashlib.sha1(x.numpy().tobytes()).hexdigest()[:16]


def train_step(model, optimizer, acc, stream, sched, cfg, step: int, rank: int, mask_id: int):
    """One optimizer step over ``cfg.grad_accum`` micro-batches (gradients synchronised on the
    last). Returns (the step's loss [] on the device, the gradient norm before clipping)."""
    loss_sum = torch.zeros((), device=acc.device)
    for micro in range(cfg.grad_accum):
        c = step * cfg.grad_accum + micro
        tokens, sigma, n_prompt = batch_orders(
            stream.batch(c), step, c, cfg, sched, rank, acc.device
        )
        sync = micro == cfg.grad_accum - 1
        with acc.autocast(), contextlib.nullcontext() if sync else acc.no_sync(model):
            nll, rows = target_nll(model, tokens, sigma, n_prompt, cfg.objective, mask_id)
            total, weight = weighted_loss(nll, rows, len(tokens), cfg.loss_weighting)
            loss = total / weight.clamp(min=1) / cfg.grad_accum
            acc.backward(loss)
        loss_sum += loss.detach()
    grad_norm = acc.clip_grad_norm_(model.parameters(), cfg.clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, grad_norm


def evaluate(model, acc, val: torch.Tensor, n_val: int, cfg, mask_id: int) -> float:
    """Validation loss (mean NLL per masked token) over all ranks' shares of the ``n_val``
    validation chunks, with the fixed protocol of ``training.evaluate``; NaN without any."""
    if n_val == 0:
        return math.nan
    idx = list(range(acc.process_index, n_val, acc.num_processes))
    tot = val_nll(model, val, idx, n_val, cfg, mask_id, acc.device, acc.autocast)
    tot = acc.reduce(tot, reduction="sum")
    model.train()
    return float(tot[0] / tot[1].clamp(min=1))


def log(
    metrics: CsvLog,
    *,
    step: int,
    tokens: int,
    epoch: float,
    lr: float,
    mask_range: tuple[float, float],
    train_loss: float,
    val_loss: float | None,
    grad_norm: float,
    tok_per_s: float,
    elapsed_s: float,
) -> None:
    """The one metrics row of a step (``val_loss`` None where the step did not evaluate)."""
    metrics.row(
        step=step,
        tokens=tokens,
        epoch=round(epoch, 4),
        lr=float(f"{lr:.6g}"),
        mask_lo=round(mask_range[0], 4),
        mask_hi=round(mask_range[1], 4),
        train_loss=train_loss,
        val_loss=val_loss,
        grad_norm=grad_norm,
        tok_per_s=round(tok_per_s) if math.isfinite(tok_per_s) else None,
        elapsed_s=round(elapsed_s, 2),
    )


def save(out: Path, raw, optimizer, progress: Progress, cfg: TrainConfig, acc) -> None:
    """A checkpoint of ``progress.step`` (every rank calls this)."""
    trainer = dict(asdict(progress), config=vars(cfg))
    path = ckpt.step_dir(out, progress.step)
    rank, main = acc.process_index, acc.is_main_process
    keep, barrier = cfg.keep_checkpoints, acc.wait_for_everyone
    ckpt.save(path, raw, optimizer, trainer, rank=rank, is_main=main, barrier=barrier, keep=keep)


def write_samples(samples: CsvLog, raw, tokenizer, val: torch.Tensor, cfg, step: int) -> None:
    """ASSD infills of the first validation chunks (main process), logged to samples.csv."""
    rows = val[: cfg.n_samples, : min(cfg.sample_len, cfg.seq_len)]
    if cfg.n_samples <= 0 or len(rows) == 0:
        return
    seed = mix_seed(cfg.seed, step, TAG_SAMPLES)
    for i, s in enumerate(infill(raw, tokenizer, rows, cfg.sample_rate, seed=seed)):
        samples.row(
            step=step,
            i=i,
            nfe=s.nfe,
            generated=s.generated,
            prompt=s.prompt,
            output=s.output,
            original=s.original,
        )
    raw.train()


def _data(cfg: TrainConfig, tokenizer, acc) -> tuple[ChunkStream, torch.Tensor, int]:
    """(this rank's batches, its share of the validation chunks, the number of validation
    chunks). Each rank packs its own shard of the training documents."""
    rank, world = acc.process_index, acc.num_processes
    train_docs, val_docs = split_docs(cfg, rank, world)
    eod = eod_id(tokenizer)
    chunks = pack(tokenize(tokenizer, train_docs), eod, cfg.seq_len)  # [N, L]
    val_all = pack(tokenize(tokenizer, val_docs), eod, cfg.seq_len)[: cfg.eval_chunks]
    n_chunks = int(acc.reduce(torch.tensor(len(chunks), device=acc.device), "sum"))
    acc.print(
        f"data: {n_chunks} train chunks x {cfg.seq_len} tokens over {world} process(es), "
        f"{len(val_all)} validation chunks"
    )
    return ChunkStream(chunks, cfg.batch_size, cfg.seed, rank), val_all, len(val_all)


def _resume(cfg: TrainConfig, out: Path, raw, optimizer, acc) -> Progress:
    if not cfg.resume:
        return Progress()
    # The newest intact checkpoint (damaged ones are skipped with a warning).
    rank, world = acc.process_index, acc.num_processes
    path, saved = ckpt.resume(cfg.resume, out, raw, optimizer, rank=rank, world=world)
    progress = Progress(**{k: saved[k] for k in asdict(Progress()) if k in saved})
    acc.print(f"resumed from {path} at step {progress.step}")
    return progress


def _due(step: int, every: int, last: bool) -> bool:
    return step % every == 0 or last


def train(cfg: TrainConfig) -> dict:
    """Run training; returns the summary (also written to ``<out>/summary.json``)."""
    t0 = time.time()
    check_config(cfg)
    acc, precision = _accelerator(cfg)
    rank, world, main = acc.process_index, acc.num_processes, acc.is_main_process
    out = Path(cfg.out)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(vars(cfg), indent=2) + "\n")
    acc.wait_for_everyone()

    tokenizer = _tokenizer(cfg, acc, out)
    mask_id = tokenizer.mask_token_id
    stream, val_all, n_val = _data(cfg, tokenizer, acc)
    val = val_all[rank::world]
    net = _model(cfg, tokenizer)
    acc.print(
        f"model: {n_params(net) / 1e6:.2f} M parameters, {net.config.n_layer} layers, "
        f"d_model {net.config.d_model}; precision {precision}; {time.time() - t0:.1f}s"
    )
    # The training forward over the Hugging Face model; query rows padded to the most targets
    # a row can have at the final masking range, so steps share one shape.
    fast = FastXLNet(
        net, min_query_rows=int(n_masked_of(torch.tensor([cfg.mask_max]), cfg.seq_len))
    )
    model, optimizer = acc.prepare(fast, _optimizer(fast, cfg))
    if cfg.compile:
        # Static shapes: inductor's dynamic-shape backward of this forward failed on an H200
        # (torch 2.11, "shape '[1280, 768]' is invalid"); with fixed query rows there is one.
        model = torch.compile(model, dynamic=False)
    raw = acc.unwrap_model(model).net  # the Hugging Face model: checkpoints, samples, export

    progress = _resume(cfg, out, raw, optimizer, acc)
    resumed = progress.step if cfg.resume else None
    metrics = CsvLog(out / "metrics.csv", METRICS, main, resumed)
    samples = CsvLog(out / "samples.csv", SAMPLE_FIELDS, main, resumed)
    sched = MaskSchedule(cfg.mask_start, cfg.mask_min, cfg.mask_max, cfg.mask_warmup_steps)
    tok_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum * world
    start = step = progress.step
    total = progress.planned_steps or cfg.max_steps
    watch = Stopwatch()
    budget = TimeBudget(cfg, t0, start, bool(progress.planned_steps), watch)
    meter = Meter(watch, progress.tokens, steady_after=start + PROBE[0])
    best_val, best_step = math.inf, None
    train_loss = val_loss = math.nan
    c0 = start * cfg.grad_accum
    digest = batch_digest(stream.batch(c0))
    print(f"[rank {rank}/{world}] first batch sha1 {digest} (micro-batch {c0})", flush=True)
    bar = tqdm(total=total, initial=start, disable=not (main and cfg.progress), desc="train")

    model.train()
    while step < total:
        lr = lr_at(step, cfg.lr, cfg.warmup_steps, total, cfg.final_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, grad_norm = train_step(model, optimizer, acc, stream, sched, cfg, step, rank, mask_id)
        step += 1
        progress.tokens += tok_per_step
        bar.update(1)
        total = bar.total = budget.plan(acc, step, total)
        last = step >= total or (step % cfg.log_every == 0 and budget.exhausted(acc))

        evaluated = _due(step, cfg.eval_every, last)
        if evaluated:
            with watch.paused():
                val_loss = evaluate(model, acc, val, n_val, cfg, mask_id)
                acc.print(f"step {step}: val loss {val_loss:.4f}, {time.time() - t0:.0f}s")
                if cfg.export and cfg.export_best and val_loss < best_val:
                    best_val, best_step = val_loss, step
                    if main:
                        export(raw, tokenizer, cfg.export, cfg.seq_len, cfg.export_weights)
        if _due(step, cfg.log_every, evaluated):
            train_loss, tps = float(acc.reduce(loss, "mean")), meter.window(step, progress)
            log(
                metrics,
                step=step,
                tokens=progress.tokens,
                epoch=stream.epoch_of(step * cfg.grad_accum),  # micro-batches consumed
                lr=lr,
                mask_range=sched.range_at(step),
                train_loss=train_loss,
                val_loss=val_loss if evaluated else None,
                grad_norm=float(grad_norm),
                tok_per_s=tps,
                elapsed_s=time.time() - t0,
            )
            bar.set_postfix(loss=f"{train_loss:.3f}", val=f"{val_loss:.3f}", tok_s=f"{tps:,.0f}")
        if _due(step, cfg.sample_every, last):
            with watch.paused():
                if main:
                    write_samples(samples, raw, tokenizer, val_all, cfg, step)
                acc.wait_for_everyone()
        if _due(step, cfg.save_every, last):
            with watch.paused():
                progress.step, progress.planned_steps = step, total
                save(out, raw, optimizer, progress, cfg, acc)
        if last:
            break
    bar.close()
    metrics.close()
    samples.close()
    # Processes of one run hold the same parameters (DDP keeps them in step): compare these lines.
    checksum = float(sum(p.detach().double().sum() for p in raw.parameters()))
    print(f"[rank {rank}/{world}] parameter checksum {checksum:.17g}", flush=True)

    exported = (best_step, best_val) if cfg.export_best else (step, val_loss)
    summary = {
        "steps": step,
        "tokens_seen": progress.tokens,
        "final_train_loss": train_loss,
        "final_val_loss": val_loss,
        "train_time_s": round(progress.train_time, 1),
        "wall_time_s": round(time.time() - t0, 1),
        "tokens_per_s": round(progress.tokens / max(progress.train_time, 1e-9)),
        "tokens_per_s_steady": meter.steady(),
        "processes": world,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "parameters": n_params(raw),
        "precision": precision,
        "exported_step": exported[0],
        "exported_val_loss": exported[1],
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
