"""Checkpoints for exact resume that survive faults: atomic, verified, the last N kept.

Layout of ``<out>/checkpoints/step_XXXXXXX/``: ``model.safetensors`` and ``config.json`` (the
model), ``optimizer.pt`` (AdamW state), ``trainer.json`` (step, planned steps, tokens seen, time),
``rng_rank{r}.pt`` (each process's torch CPU/accelerator RNG) and ``manifest.json`` (the size and
SHA-256 of every other file, and the number of processes). The learning-rate and masking
schedules are functions of the step, and batches and orders are functions of (seed, rank, step),
so nothing else is needed. ``.pt`` files hold tensors only and load with ``weights_only=True``.

Faults: a checkpoint is written into ``.tmp-step_XXXXXXX/`` and renamed into place only when
complete, so a kill or a full disk never leaves a partial ``step_*`` directory. ``resume`` checks
every file against the manifest and falls back to the newest good checkpoint, logging why each
newer one was skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SHARED = ("model.safetensors", "config.json", "optimizer.pt", "trainer.json")  # main process
DEFAULT_KEEP = 3


class CheckpointError(OSError):
    """A checkpoint could not be written (nothing partial is left behind)."""


class CheckpointMismatch(ValueError):
    """A sound checkpoint that does not fit this model (falling back would not help)."""


def step_dir(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"step_{step:07d}"


def _step_of(path: Path) -> int:
    try:
        return int(path.name.removeprefix("step_"))
    except ValueError:
        return -1


def checkpoints(root: str | Path) -> list[Path]:
    """The ``step_*`` directories under ``root`` (a ``checkpoints`` folder), newest first."""
    dirs = [p for p in Path(root).glob("step_*") if p.is_dir() and _step_of(p) >= 0]
    return sorted(dirs, key=_step_of, reverse=True)


def latest(out_dir: str | Path) -> Path | None:
    """The newest checkpoint directory that looks complete (not verified: see ``resume``)."""
    for p in checkpoints(Path(out_dir) / "checkpoints"):
        if (p / MANIFEST).exists() or (p / "trainer.json").exists():
            return p
    return None


def _rng_state() -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _digest(path: Path) -> tuple[int, str]:
    """(bytes, sha256) of a file; also flushes it to disk (fsync)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
        os.fsync(f.fileno())
    return path.stat().st_size, h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(
    path: Path,
    model,
    optimizer,
    trainer: dict,
    *,
    rank: int,
    is_main: bool,
    barrier: Callable[[], None] | None = None,
    keep: int = DEFAULT_KEEP,
) -> None:
    """Every rank calls this; the main process writes the shared files, the manifest, renames the
    finished directory into place and deletes all but the ``keep`` newest checkpoints.

    Raises CheckpointError (e.g. disk full) with the temporary directory removed and the earlier
    checkpoints untouched.
    """
    if not isinstance(keep, int) or keep < 1:
        raise ValueError(f"--keep-checkpoints must be an int >= 1, got {keep!r}")
    path = Path(path)
    root = path.parent
    tmp = root / f".tmp-{path.name}"
    wait = barrier or (lambda: None)
    if is_main:
        root.mkdir(parents=True, exist_ok=True)
        for stale in [*root.glob(".tmp-*"), *root.glob(".old-*")]:  # left by a killed save
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    wait()
    try:
        torch.save(_rng_state(), tmp / f"rng_rank{rank}.pt")
        if is_main:
            save_model(model, str(tmp / "model.safetensors"))
            model.config.to_json_file(str(tmp / "config.json"))
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            (tmp / "trainer.json").write_text(json.dumps(trainer, indent=2) + "\n")
        wait()
        if is_main:
            _finish(tmp, path)
    except BaseException as e:
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise CheckpointError(
                f"could not write checkpoint {path}: {e}. Nothing partial was left behind; "
                f"the earlier checkpoints in {root} are intact"
            ) from e
        raise
    if is_main:
        prune(root, keep)
    wait()


def _finish(tmp: Path, path: Path) -> None:
    """Record sizes and checksums, then rename the finished directory into place."""
    files = sorted(p for p in tmp.iterdir() if p.is_file())
    record = {}
    for p in files:
        size, sha = _digest(p)
        record[p.name] = {"bytes": size, "sha256": sha}
    world = sum(1 for p in files if p.name.startswith("rng_rank"))
    manifest = {"format": 1, "world": world, "files": record}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    _digest(tmp / MANIFEST)  # fsync
    _fsync_dir(tmp)
    if path.exists():  # the same step written again (after a resume): swap it out
        old = path.parent / f".old-{path.name}"
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
    _fsync_dir(path.parent)


def prune(root: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints (by step)."""
    for old in checkpoints(root)[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def verify(path: Path, *, rank: int = 0, world: int | None = None) -> str | None:
    """None if the checkpoint is complete and intact for this rank, else the reason it is not.

    A checkpoint written before manifests existed (``trainer.json`` but no manifest) passes with
    a warning: it cannot be checked.
    """
    path = Path(path)
    if not path.is_dir():
        return "not a directory"
    if not (path / MANIFEST).exists():
        if (path / "trainer.json").exists() and (path / "model.safetensors").exists():
            log.warning("checkpoint %s has no %s (an older format): not verified", path, MANIFEST)
            return None
        return f"{MANIFEST} is missing (an incomplete checkpoint)"
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files, saved_world = manifest["files"], manifest["world"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{MANIFEST} is unreadable ({e})"
    for name in (*SHARED, f"rng_rank{rank}.pt"):
        if name not in files:
            return f"{name} was not saved in it"
    if world is not None and saved_world != world:
        return (
            f"it was written by {saved_world} process(es) and is resumed by {world}: "
            "batches and random streams would differ (resume with the same number of processes)"
        )
    for name, rec in files.items():
        p = path / name
        if not p.is_file():
            return f"{name} is missing"
        size = p.stat().st_size
        if size != rec["bytes"]:
            return f"{name} has {size} bytes, {rec['bytes']} were written (truncated or replaced)"
        if _digest(p)[1] != rec["sha256"]:
            return f"{name} does not match its SHA-256 checksum (corrupted)"
    return None


def load(path: Path, model, optimizer, *, rank: int) -> dict:
    """Restore model, optimizer and this rank's RNG (no verification); returns the trainer dict."""
    path = Path(path)
    if not (path / "trainer.json").exists():
        raise ValueError(f"resume path {path} holds no complete checkpoint (no trainer.json)")
    missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
    if unexpected or any("lm_loss.weight" not in k for k in missing):
        raise CheckpointMismatch(
            f"checkpoint {path} does not match the model: {missing=} {unexpected=}"
        )
    optimizer.load_state_dict(
        torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu")
    )
    _set_rng_state(torch.load(path / f"rng_rank{rank}.pt", weights_only=True))
    return json.loads((path / "trainer.json").read_text())


def resume(
    which: str | Path, out_dir: str | Path, model, optimizer, *, rank: int, world: int
) -> tuple[Path, dict]:
    """Restore the newest good checkpoint: ``which`` = "latest" (in ``out_dir``) or a checkpoint
    directory (then it, or failing that an older one beside it).

    Each checkpoint skipped is logged with its reason. Returns (path, trainer dict); raises
    ValueError listing the reasons if none is good.
    """
    if str(which) == "latest":
        root = Path(out_dir) / "checkpoints"
        candidates = checkpoints(root)
        if not candidates:
            raise ValueError(f"--resume latest: no checkpoint under {root}")
    else:
        asked = Path(which)
        if not asked.is_dir():
            raise ValueError(f"--resume {asked}: no such checkpoint directory")
        older = [p for p in checkpoints(asked.parent) if _step_of(p) < _step_of(asked)]
        candidates = [asked, *older]
    skipped = []
    for p in candidates:
        reason = verify(p, rank=rank, world=world)
        if reason is None:
            try:
                return p, load(p, model, optimizer, rank=rank)
            except CheckpointMismatch:
                raise
            except Exception as e:  # an unverifiable (older-format) checkpoint that is damaged
                reason = f"it could not be loaded ({type(e).__name__}: {e})"
        log.warning("skipping checkpoint %s: %s", p, reason)
        skipped.append(f"{p.name}: {reason}")
    raise ValueError("no usable checkpoint to resume from: " + "; ".join(skipped))
