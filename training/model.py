"""Build, save and export XLNet AS-ARMs (from a preset config, or any XLNet-format checkpoint)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .tokenizer import save as save_tokenizer


@dataclass(frozen=True)
class Preset:
    d_model: int
    n_layer: int
    n_head: int
    d_inner: int


PRESETS = {
    "tiny": Preset(32, 2, 2, 64),  # tests
    "small": Preset(128, 3, 4, 512),
    "demo": Preset(256, 4, 4, 1024),  # the first embedded models (~5.5 M parameters)
    "embedded": Preset(320, 6, 5, 1280),  # the embedded models (~10.6 M parameters, int8)
    "base": Preset(768, 12, 12, 3072),  # XLNet-base size, the paper's architecture (~117 M)
}


def build_model(tokenizer, preset: str = "demo", dropout: float = 0.0, **overrides):
    """A fresh ``XLNetLMHeadModel`` sized by ``preset`` (fields overridable) for ``tokenizer``."""
    from transformers import XLNetConfig, XLNetLMHeadModel

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    p = PRESETS[preset].__dict__ | {k: v for k, v in overrides.items() if v is not None}
    if p["d_model"] % p["n_head"]:
        raise ValueError(f"d_model {p['d_model']} must be divisible by n_head {p['n_head']}")
    cfg = XLNetConfig(
        vocab_size=len(tokenizer),
        d_model=p["d_model"],
        n_layer=p["n_layer"],
        n_head=p["n_head"],
        d_inner=p["d_inner"],
        ff_activation="gelu",
        dropout=dropout,
        mem_len=None,
        use_mems_eval=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    return XLNetLMHeadModel(cfg)


def load_model(name_or_path: str, revision: str | None = None):
    """Fine-tune any XLNet-format checkpoint (Hub name, local folder, or an embedded name such as
    "code"; int8 checkpoints are dequantised), in float32."""
    from assd.loading import load

    return load(name_or_path, revision, backend="reference", device="cpu").model.net.float()


def freeze_unused(model) -> None:
    """Freeze XLNet's segment terms: unused without token_type_ids, and DDP rejects unused params."""
    for name, p in model.named_parameters():
        if "seg_embed" in name or "r_s_bias" in name:
            p.requires_grad_(False)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


WEIGHT_FORMATS = ("float16", "float32", "int8")


def export(
    model, tokenizer, out_dir: str | Path, max_length: int, weights: str = "float16"
) -> None:
    """Save weights (safetensors), config (with ``assd_max_length``) and tokenizer.

    weights: float16 / float32, or int8 (per-channel scales, ``assd.quantize``; ``assd.load``
    dequantises). Float shards are capped at 15 MB so that every file fits the repository's
    16 MiB limit; an int8 file is a single ``model.safetensors``.
    """
    from safetensors.torch import save_file

    from assd.quantize import METHOD, quantize

    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"weights must be one of {WEIGHT_FORMATS}, got {weights!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("model*.safetensors*"):  # a previous export's shards
        old.unlink()
    model.config.assd_max_length = int(max_length)
    dtype = torch.float32 if weights != "float16" else torch.float16
    state = {k: v.detach().to("cpu", dtype) for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_loss.weight", None)  # the word embedding (tied): stored once
    if weights == "int8":
        model.config.save_pretrained(str(out))
        tmp = out / "model.safetensors.tmp"
        save_file(quantize(state), str(tmp), metadata={"format": "pt"})
        tmp.replace(out / "model.safetensors")
    else:
        model.save_pretrained(str(out), state_dict=state, max_shard_size="15MB")
    save_tokenizer(tokenizer, out)
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["assd_max_length"] = int(max_length)
    cfg.pop("assd_quantization", None)
    if weights == "int8":
        cfg["assd_quantization"] = METHOD
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
