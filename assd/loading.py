"""Load an XLNet-format AS-ARM and its tokenizer: embedded short name, local directory or Hub id."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from . import whitespace
from .heads import load_head
from .model import ASARM

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
EMBEDDED = ("prose", "code")  # short names of the models shipped inside the package
BACKENDS = ("auto", "engine", "reference")
# Files a tokenizer's vocabulary can come from (tokenizer.json first: what save_pretrained writes).
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer.model", "vocab.json", "vocab.txt")

log = logging.getLogger("assd")


class MissingTokenizer(ValueError):
    """The model has no tokenizer files (the message names them)."""


@dataclass
class Loaded:
    """A model ready for sampling: ``model`` (an ASARM), its ``tokenizer`` and where it came from."""

    model: ASARM
    tokenizer: object
    name: str
    revision: str | None = None
    whitespace: str | None = None  # a mapping the model expects (``assd.whitespace``), or None


def default_device() -> torch.device:
    """The best available accelerator: CUDA, then Apple MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device | str) -> torch.dtype:
    """The engine's dtype when none is asked for: bfloat16 where the hardware runs it natively
    (CUDA; CPUs with AVX512-BF16 or AMX), float32 elsewhere.

    Why: a cached call reads every weight for a few rows. Measured on a 2-core AMD EPYC with
    AVX512-BF16 (the embedded models, L = 256, one sequence): sequential decoding 1.42x (prose)
    and 1.79x (code) faster in bfloat16 than in float32; logits differ by bfloat16 rounding,
    as on a GPU. Pass dtype=torch.float32 for full precision."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        native = any(
            bool(getattr(cpu, f, lambda: False)())
            for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        )
        return torch.bfloat16 if native else torch.float32
    return torch.float32


def resolve(name_or_path: str) -> tuple[str, bool]:
    """-> (path or Hub id, is_local). Short names map to the embedded models."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ValueError(
            "model must be a non-empty string: 'prose', 'code', a directory or a Hub id"
        )
    name = name_or_path.strip()
    if name in EMBEDDED:
        path = PRETRAINED_DIR / name
        if not (path / "config.json").exists():
            raise ValueError(
                f"the embedded model {name!r} is not installed (expected it in {path})"
            )
        return str(path), True
    if os.path.isdir(name):
        return name, True
    if (
        name.startswith(("/", ".", "~"))
        or name.count("/") > 1
        or os.path.sep != "/"
        and os.path.sep in name
    ):
        raise ValueError(f"no model directory at {name!r} (a Hub id looks like 'owner/name')")
    return name, False


def load(
    name_or_path: str = "prose",
    revision: str | None = None,
    *,
    backend: str = "auto",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    compile: bool = False,
) -> Loaded:
    """Load a model by short name ("prose", "code"), local directory or Hub id (+ revision).

    backend: "engine" (fast, KV-cached), "reference" (Hugging Face XLNet, the paper's way) or
    "auto" (the engine when it supports the checkpoint, else the reference backend, with the
    reason logged on the "assd" logger). Weights are read from safetensors only. The model's
    ``mask_id`` is the tokenizer's mask token (prompts must not contain it). dtype: of the
    weights; by default the engine runs in :func:`default_dtype` (bfloat16 where the hardware
    runs it natively) and the reference backend in float32. compile: sample with compiled
    rounds (``torch.compile`` of each whole round before its CUDA graph capture: fewer, fused
    kernels; on an H200 1.4x faster sequential decoding and up to 1.9x faster head-drafted ASSD
    at batch 1), paid for by a compilation of tens of seconds per sampler and batch shape,
    once per process. Engine backend only.
    """
    from transformers import AutoTokenizer

    if compile and backend == "reference":
        raise ValueError(
            "compile=True compiles the engine's rounds: use backend='engine' or 'auto' "
            "(the reference backend cannot run a round without host syncs)"
        )

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    path, local = resolve(name_or_path)
    device = torch.device(device) if device is not None else default_device()
    kw = {"revision": revision} if revision and not local else {}
    try:
        net = _load_net(path, local, kw)
        if local:
            check_tokenizer_files(path)
        tokenizer = AutoTokenizer.from_pretrained(path, **kw)
    except MissingTokenizer:
        raise
    except (OSError, ValueError) as e:
        where = "directory" if local else "Hugging Face Hub id"
        rev = f" at revision {revision!r}" if revision else ""
        raise ValueError(
            f"could not load the {where} {name_or_path!r}{rev}: {str(e).splitlines()[0]} "
            "(check the name and revision, your network connection, or pass a local directory)"
        ) from e
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):  # a placeholder, no vocabulary
        raise MissingTokenizer(
            f"the tokenizer of {name_or_path!r} holds only special tokens ({len(tokenizer)}): "
            f"its vocabulary file is missing ({' or '.join(TOKENIZER_FILES[:2])}); "
            "save the tokenizer next to the model with tokenizer.save_pretrained(...)"
        )
    mask_id = tokenizer.mask_token_id
    if mask_id is not None and not 0 <= mask_id < net.config.vocab_size:
        raise ValueError(
            f"the tokenizer's mask id {mask_id} lies outside the model's vocabulary "
            f"({net.config.vocab_size} tokens): tokenizer and model of {name_or_path!r} do not match"
        )
    net = net.to(device=device, dtype=dtype) if dtype is not None else net.to(device)
    engine_dtype = dtype if dtype is not None else default_dtype(device)
    ws = whitespace.detect(net.config, name_or_path.strip(), revision)
    forbidden = tuple(sorted(set(tokenizer.all_special_ids)))
    if ws is not None:  # whitespace lives in special tokens: forbid only what its code forbids
        forbidden = whitespace.forbidden_ids(tokenizer, ws)
    max_length = getattr(net.config, "assd_max_length", None)
    head = load_head(path, device=net.device, dtype=net.dtype) if local else None
    model = wrap(
        net, forbidden, max_length, backend, mask_id=mask_id, head=head, dtype=engine_dtype
    )
    if compile:
        if not hasattr(model, "compile_rounds"):
            raise ValueError(
                f"compile=True: {name_or_path!r} runs on the reference backend (the engine "
                "cannot run it, see the 'assd' log), whose rounds cannot be compiled; load it "
                "with compile=False"
            )
        model.compile_rounds = True
    return Loaded(model, tokenizer, name_or_path, revision, ws)


def check_tokenizer_files(path: str) -> None:
    """Raise ValueError naming the missing file if the model directory has no tokenizer.

    (Without one, ``AutoTokenizer`` builds a placeholder from the config alone, and every word
    becomes ``<unk>``.)
    """
    if not any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES):
        raise MissingTokenizer(
            f"the model directory {path!r} has no tokenizer: {TOKENIZER_FILES[0]} is missing "
            f"(nor is there {', '.join(TOKENIZER_FILES[1:])}); save the tokenizer next to the "
            "model with tokenizer.save_pretrained(directory)"
        )


def _load_net(path: str, local: bool, kw: dict):
    """``XLNetLMHeadModel`` from safetensors; int8 checkpoints (``assd.quantize``) dequantised."""
    from transformers import XLNetConfig, XLNetLMHeadModel

    cfg = XLNetConfig.from_pretrained(path, **kw)
    method = getattr(cfg, "assd_quantization", None)
    if method is None:
        return XLNetLMHeadModel.from_pretrained(path, use_safetensors=True, **kw)
    from safetensors.torch import load_file

    from .quantize import METHOD, dequantize

    if method != METHOD:
        raise ValueError(f"unknown assd_quantization {method!r} (this version reads {METHOD!r})")
    if local:
        file = os.path.join(path, "model.safetensors")
    else:
        from huggingface_hub import hf_hub_download

        file = hf_hub_download(path, "model.safetensors", **kw)
    net = XLNetLMHeadModel(cfg)
    missing, unexpected = net.load_state_dict(dequantize(load_file(file)), strict=False)
    if unexpected or set(missing) - {"lm_loss.weight"}:
        raise ValueError(
            f"{file}: weights do not match the config (missing {missing}, unexpected {unexpected})"
        )
    net.tie_weights()
    return net.eval()


def wrap(
    net,
    forbidden_ids: tuple[int, ...],
    max_length: int | None,
    backend: str = "auto",
    *,
    mask_id: int | None = None,
    head=None,
    dtype: torch.dtype | None = None,
) -> ASARM:
    """An ASARM over a Hugging Face ``XLNetLMHeadModel`` (and its draft head, if any).

    backend "auto": the engine, or the reference backend (with the reason logged on the "assd"
    logger) when the engine cannot run this checkpoint.
    """
    from .backends.xlnet_reference import XLNetReference

    if backend in ("auto", "engine"):
        try:
            from .backends.engine import XLNetEngine

            return XLNetEngine.from_hf(
                net, forbidden_ids, max_length, dtype=dtype, mask_id=mask_id, head=head
            )
        except (ImportError, ValueError, NotImplementedError) as e:
            if backend == "engine":
                raise
            log.warning(
                "assd.load: using the reference backend (slower): the engine cannot run this "
                "checkpoint: %s",
                e,
            )
    return XLNetReference(net, forbidden_ids, max_length, mask_id=mask_id, head=head)
