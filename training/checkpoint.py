"""Checkpoints for exact resume: safetensors weights + optimizer, progress and RNG state.

Layout of ``<out>/checkpoints/step_XXXXXXX/``: ``model.safetensors`` and ``config.json`` (the
model), ``optimizer.pt`` (AdamW state), ``trainer.json`` (step, planned steps, tokens seen, time),
``rng_rank{r}.pt`` (each process's torch CPU/accelerator RNG). The learning-rate and masking
schedules are functions of the step, and batches and orders are functions of (seed, rank, step),
so nothing else is needed. ``.pt`` files hold tensors only and load with ``weights_only=True``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model


def step_dir(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"step_{step:07d}"


def latest(out_dir: str | Path) -> Path | None:
    dirs = sorted((Path(out_dir) / "checkpoints").glob("step_*/trainer.json"))
    return dirs[-1].parent if dirs else None


def _rng_state() -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save(
    path: Path, model, optimizer, trainer: dict, *, rank: int, is_main: bool, barrier=None
) -> None:
    """Every rank calls this; the main process writes the shared files."""
    path.mkdir(parents=True, exist_ok=True)
    torch.save(_rng_state(), path / f"rng_rank{rank}.pt")
    if is_main:
        save_model(model, str(path / "model.safetensors"))
        model.config.to_json_file(str(path / "config.json"))
        torch.save(optimizer.state_dict(), path / "optimizer.pt")
        # Written last: its presence marks a complete checkpoint (see ``latest``).
        (path / "trainer.json").write_text(json.dumps(trainer, indent=2) + "\n")
    if barrier is not None:
        barrier()


def load(path: Path, model, optimizer, *, rank: int) -> dict:
    """Restore model, optimizer and this rank's RNG; returns the trainer dict."""
    if not (path / "trainer.json").exists():
        raise ValueError(f"resume path {path} holds no complete checkpoint (no trainer.json)")
    missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
    if unexpected or any("lm_loss.weight" not in k for k in missing):
        raise ValueError(f"checkpoint {path} does not match the model: {missing=} {unexpected=}")
    optimizer.load_state_dict(
        torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu")
    )
    rng = path / f"rng_rank{rank}.pt"
    if rng.exists():
        _set_rng_state(torch.load(rng, weights_only=True))
    return json.loads((path / "trainer.json").read_text())
