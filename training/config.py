"""Training options: one dataclass, turned into command-line flags field by field."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass


@dataclass
class TrainConfig:
    # Data: a Hub dataset name (online) or local .json/.jsonl/.txt files (.gz/.xz too).
    data: str = "openwebtext"
    data_name: str | None = None  # Hub config name
    data_dir: str | None = None  # Hub data_dir, e.g. "python" for bigcode/starcoderdata
    data_revision: str | None = None
    text_field: str = "text"
    streaming: bool = False
    max_docs: int | None = None  # read at most this many documents
    val_data: str | None = None  # else every ``val_every_doc``-th document is held out
    val_every_doc: int = 50
    eval_chunks: int = 128  # validation chunks (all ranks together)

    # Model: fine-tune ``init`` (any XLNet-format checkpoint) or build ``preset`` from scratch.
    init: str | None = None
    revision: str | None = None
    preset: str = "demo"
    d_model: int | None = None
    n_layer: int | None = None
    n_head: int | None = None
    d_inner: int | None = None
    dropout: float = 0.0
    tokenizer: str | None = None  # default: init's tokenizer, or a BPE trained on ``data``
    vocab_size: int = 8192  # for a tokenizer trained here
    tokenizer_chars: int = 40_000_000
    split_newlines: bool = False  # for a tokenizer trained here: every newline its own token (code)

    # Objective (see training.objective) and the masking-rate schedule (training.schedule).
    objective: str = "joint"
    order: str = "left-to-right"  # or random (assd.orders.ORDERS; "paper" = left-to-right)
    span_fraction: float = 0.0  # share of sequences masked as one contiguous span (infilling)
    loss_weighting: str = "token"  # token | sequence (the paper's scale_by_none); see objective
    mask_start: float = 0.15
    mask_min: float = 0.05
    mask_max: float = 0.95
    mask_warmup_steps: int = 1000

    # Optimisation. batch_size is per process and micro-batch.
    seq_len: int = 256
    batch_size: int = 64
    grad_accum: int = 1
    lr: float = 1e-3
    final_lr_ratio: float = 0.0
    warmup_steps: int = 200
    max_steps: int = 10_000
    max_time: float | None = None  # seconds from start: plans max_steps to end in time
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    clip: float = 1.0
    precision: str = "auto"  # auto = bf16 autocast on CUDA, float32 elsewhere; or bf16 / fp16 / no
    compile: bool = False  # torch.compile the training forward (pays on long GPU runs)
    seed: int = 0

    # Output.
    out: str = "runs/train"
    log_every: int = 10
    eval_every: int = 250
    sample_every: int = 1000
    n_samples: int = 2
    sample_len: int = 64
    sample_rate: float = 0.5
    save_every: int = 1000
    resume: str | None = None  # a checkpoint folder, or "latest" (in ``out``)
    keep_checkpoints: int = 3  # the newest N checkpoints are kept (resume falls back to them)
    export: str | None = None  # at the end, save an fp16 model + tokenizer here
    export_weights: str = "float16"  # float16 | float32 | int8 (per-channel, see assd.quantize)
    export_best: bool = False  # export at the evaluation with the lowest validation loss instead
    progress: bool = True


def _flag_type(tp):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return args[0]
    return tp


def parse(argv: list[str] | None = None) -> TrainConfig:
    p = argparse.ArgumentParser(
        prog="python -m training.train", description="Train an XLNet AS-ARM (see training/README)."
    )
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        tp = _flag_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        if tp is bool:
            p.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default
            )
        else:
            p.add_argument(flag, dest=f.name, type=tp, default=f.default)
    return TrainConfig(**vars(p.parse_args(argv)))
