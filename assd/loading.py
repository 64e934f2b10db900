"""Load an XLNet-format AS-ARM and its tokenizer: embedded short name, local directory or Hub id."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from . import whitespace
from .model import ASARM

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
EMBEDDED = ("prose", "code")  # short names of the models shipped inside the package
BACKENDS = ("auto", "engine", "reference")


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
) -> Loaded:
    """Load a model by short name ("prose", "code"), local directory or Hub id (+ revision).

    backend: "engine" (fast, KV-cached), "reference" (Hugging Face XLNet, the paper's way) or
    "auto" (the engine when available). Weights are read from safetensors only.
    """
    from transformers import AutoTokenizer, XLNetLMHeadModel

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    path, local = resolve(name_or_path)
    device = torch.device(device) if device is not None else default_device()
    kw = {"revision": revision} if revision and not local else {}
    try:
        net = XLNetLMHeadModel.from_pretrained(path, use_safetensors=True, **kw)
        tokenizer = AutoTokenizer.from_pretrained(path, **kw)
    except (OSError, ValueError) as e:
        where = "directory" if local else "Hugging Face Hub id"
        rev = f" at revision {revision!r}" if revision else ""
        raise ValueError(
            f"could not load the {where} {name_or_path!r}{rev}: {str(e).splitlines()[0]} "
            "(check the name and revision, your network connection, or pass a local directory)"
        ) from e
    net = net.to(device=device, dtype=dtype) if dtype is not None else net.to(device)
    ws = whitespace.detect(net.config, name_or_path.strip(), revision)
    forbidden = tuple(sorted(set(tokenizer.all_special_ids)))
    if ws is not None:  # whitespace lives in special tokens: forbid only what its code forbids
        forbidden = whitespace.forbidden_ids(tokenizer, ws)
    max_length = getattr(net.config, "assd_max_length", None)
    return Loaded(wrap(net, forbidden, max_length, backend), tokenizer, name_or_path, revision, ws)


def wrap(
    net, forbidden_ids: tuple[int, ...], max_length: int | None, backend: str = "auto"
) -> ASARM:
    """An ASARM over a Hugging Face ``XLNetLMHeadModel``."""
    from .backends.xlnet_reference import XLNetReference

    if backend in ("auto", "engine"):
        try:
            from .backends.engine import XLNetEngine
        except ImportError:
            if backend == "engine":
                raise
        else:
            return XLNetEngine.from_hf(net, forbidden_ids, max_length)
    return XLNetReference(net, forbidden_ids, max_length)
