"""Training checkpoints survive faults: atomic writes, the last N kept, verified resume."""

from __future__ import annotations

import csv
import errno
import json
import logging
import re
import shutil

import pytest
import torch
from conftest import make_tiny_xlnet

from training import checkpoint as ckpt

V = 30


def model_and_optimizer(seed: int = 0):
    net = make_tiny_xlnet(V, seed=seed, d_model=16, n_layer=1)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    return net, opt


def train_step(net, opt) -> None:
    x = torch.randint(0, V, (2, 6))
    net(input_ids=x).logits.logsumexp(-1).mean().backward()
    opt.step()
    opt.zero_grad()


def params(net) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def save_steps(out, net, opt, steps, keep=3) -> dict[int, dict]:
    """Train one step before each save; returns the parameters saved at each step."""
    saved = {}
    for s in steps:
        train_step(net, opt)
        ckpt.save(ckpt.step_dir(out, s), net, opt, {"step": s}, rank=0, is_main=True, keep=keep)
        saved[s] = params(net)
    return saved


def names(out) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").iterdir())


def same(net, want: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, want[k]) for k, v in net.state_dict().items())


def resume(out, which="latest", world=1, seed=1):
    net, opt = model_and_optimizer(seed)
    path, state = ckpt.resume(which, out, net, opt, rank=0, world=world)
    return path, state, net, opt


def test_atomic_save_keeps_the_last_n_with_a_manifest(tmp_path):
    net, opt = model_and_optimizer()
    save_steps(tmp_path, net, opt, [10, 20, 30, 40, 50], keep=3)
    assert names(tmp_path) == ["step_0000030", "step_0000040", "step_0000050"]
    d = ckpt.step_dir(tmp_path, 50)
    m = json.loads((d / "manifest.json").read_text())
    assert m["world"] == 1
    assert sorted(m["files"]) == [
        "config.json", "model.safetensors", "optimizer.pt", "rng_rank0.pt", "trainer.json"
    ]  # fmt: skip
    for name, rec in m["files"].items():
        assert rec["bytes"] == (d / name).stat().st_size > 0 and len(rec["sha256"]) == 64
    assert all(ckpt.verify(p) is None for p in ckpt.checkpoints(tmp_path / "checkpoints"))
    with pytest.raises(ValueError, match="keep-checkpoints must be an int >= 1"):
        ckpt.save(ckpt.step_dir(tmp_path, 60), net, opt, {}, rank=0, is_main=True, keep=0)


def test_resume_restores_weights_optimizer_and_rng(tmp_path):
    net, opt = model_and_optimizer()
    saved = save_steps(tmp_path, net, opt, [10])
    after_rng = torch.rand(3)  # the draws that follow the saved RNG state
    want_opt = opt.state_dict()
    path, state, net2, opt2 = resume(tmp_path)
    assert path.name == "step_0000010" and state == {"step": 10}
    assert same(net2, saved[10])
    assert torch.equal(torch.rand(3), after_rng)
    got = opt2.state_dict()["state"]
    assert got.keys() == want_opt["state"].keys()
    for k in got:
        assert torch.equal(got[k]["exp_avg"], want_opt["state"][k]["exp_avg"])


def damage(path, how: str) -> None:
    if how == "truncated weights":
        f = path / "model.safetensors"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif how == "flipped byte":
        f = path / "optimizer.pt"
        b = bytearray(f.read_bytes())
        b[len(b) // 2] ^= 0xFF
        f.write_bytes(bytes(b))
    elif how == "no optimizer":
        (path / "optimizer.pt").unlink()
    elif how == "no rng":
        (path / "rng_rank0.pt").unlink()
    elif how == "no manifest, truncated weights":  # an older-format checkpoint, damaged
        (path / "manifest.json").unlink()
        damage(path, "truncated weights")


@pytest.mark.parametrize(
    "how, reason",
    [
        ("truncated weights", "model.safetensors has .* bytes"),
        ("flipped byte", "optimizer.pt does not match its SHA-256 checksum"),
        ("no optimizer", "optimizer.pt is missing"),
        ("no rng", "rng_rank0.pt is missing"),
        ("no manifest, truncated weights", "could not be loaded"),
    ],
)
def test_damaged_checkpoint_falls_back_to_the_newest_good_one(tmp_path, caplog, how, reason):
    net, opt = model_and_optimizer()
    saved = save_steps(tmp_path, net, opt, [10, 20, 30])
    damage(ckpt.step_dir(tmp_path, 30), how)
    with caplog.at_level(logging.WARNING, logger="training.checkpoint"):
        path, state, net2, _ = resume(tmp_path)
    assert path.name == "step_0000020" and state["step"] == 20 and same(net2, saved[20])
    skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(skipped) == 1 and "step_0000030" in skipped[0]
    assert re.search(reason, skipped[0]), skipped[0]


def test_explicit_path_falls_back_to_an_older_sibling(tmp_path):
    net, opt = model_and_optimizer()
    saved = save_steps(tmp_path, net, opt, [10, 20, 30])
    damage(ckpt.step_dir(tmp_path, 20), "no rng")
    path, _, net2, _ = resume(tmp_path, which=str(ckpt.step_dir(tmp_path, 20)))
    assert path.name == "step_0000010" and same(net2, saved[10])  # never the newer step 30
    with pytest.raises(ValueError, match="no such checkpoint directory"):
        resume(tmp_path, which=str(tmp_path / "checkpoints" / "step_0000099"))


def test_no_good_checkpoint_lists_every_reason(tmp_path):
    net, opt = model_and_optimizer()
    save_steps(tmp_path, net, opt, [10, 20])
    damage(ckpt.step_dir(tmp_path, 20), "no optimizer")
    damage(ckpt.step_dir(tmp_path, 10), "truncated weights")
    with pytest.raises(ValueError, match="step_0000020: optimizer.pt is missing; step_0000010"):
        resume(tmp_path)
    with pytest.raises(ValueError, match="no checkpoint under"):
        resume(tmp_path / "elsewhere")


def test_resume_with_another_number_of_processes_is_refused(tmp_path):
    net, opt = model_and_optimizer()
    save_steps(tmp_path, net, opt, [10])
    with pytest.raises(ValueError, match="written by 1 process.* resumed by 2"):
        resume(tmp_path, world=2)


def test_kill_during_save_leaves_the_previous_checkpoints(tmp_path, monkeypatch):
    net, opt = model_and_optimizer()
    saved = save_steps(tmp_path, net, opt, [10])

    def killed(model, filename):  # half the weights written, then the process is interrupted
        open(filename, "wb").write(b"\0" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_model", killed)
    with pytest.raises(KeyboardInterrupt):
        save_steps(tmp_path, net, opt, [20])
    monkeypatch.undo()
    assert names(tmp_path) == ["step_0000010"]
    # A SIGKILL runs no clean-up: a partial temporary directory stays behind.
    partial = tmp_path / "checkpoints" / ".tmp-step_0000020"
    shutil.copytree(ckpt.step_dir(tmp_path, 10), partial)
    (partial / "optimizer.pt").unlink()
    path, _, net2, _ = resume(tmp_path)
    assert path.name == "step_0000010" and same(net2, saved[10])
    save_steps(tmp_path, net, opt, [20])  # the next save clears the leftovers
    assert names(tmp_path) == ["step_0000010", "step_0000020"]


@pytest.mark.parametrize("target", ["save_model", "torch.save"])
def test_disk_full_fails_cleanly(tmp_path, monkeypatch, target):
    net, opt = model_and_optimizer()
    save_steps(tmp_path, net, opt, [10, 20], keep=2)

    def full(*args, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    if target == "save_model":
        monkeypatch.setattr(ckpt, "save_model", full)
    else:
        monkeypatch.setattr(ckpt.torch, "save", full)
    with pytest.raises(ckpt.CheckpointError, match="No space left on device.*intact"):
        save_steps(tmp_path, net, opt, [30], keep=2)
    monkeypatch.undo()
    assert names(tmp_path) == ["step_0000010", "step_0000020"]  # nothing pruned, no temp dir
    assert ckpt.verify(ckpt.step_dir(tmp_path, 20)) is None


def test_saving_a_step_again_replaces_it(tmp_path):
    net, opt = model_and_optimizer()
    save_steps(tmp_path, net, opt, [10])
    saved = save_steps(tmp_path, net, opt, [10])  # e.g. after falling back to an older step
    assert names(tmp_path) == ["step_0000010"]
    path, _, net2, _ = resume(tmp_path)
    assert same(net2, saved[10])


def test_training_run_keeps_n_and_resumes_past_a_damaged_checkpoint(tmp_path, caplog):
    """End to end: --keep-checkpoints 2, the newest checkpoint truncated, --resume latest."""
    pytest.importorskip("accelerate")
    from training.tokenizer import save, train_bpe
    from training.train import main as train_main

    words = "the a cat dog sat ran on under mat tree red big small and".split()
    docs = [" ".join(words[(i * 7 + j) % len(words)] for j in range(40)) for i in range(60)]
    (tmp_path / "train.txt").write_text("\n".join(docs) + "\n")
    save(train_bpe(docs, vocab_size=300), tmp_path / "tok")
    out = tmp_path / "run"
    common = [
        "--data", str(tmp_path / "train.txt"), "--tokenizer", str(tmp_path / "tok"),
        "--preset", "tiny", "--seq-len", "16", "--batch-size", "4", "--log-every", "1",
        "--eval-every", "100", "--sample-every", "100", "--n-samples", "0", "--save-every", "4",
        "--keep-checkpoints", "2", "--eval-chunks", "2", "--no-progress", "--precision", "no",
        "--out", str(out),
    ]  # fmt: skip
    first = train_main(common + ["--max-steps", "12"])
    assert names(out) == ["step_0000008", "step_0000012"]
    damage(ckpt.step_dir(out, 12), "truncated weights")
    with caplog.at_level(logging.WARNING, logger="training.checkpoint"):
        again = train_main(common + ["--max-steps", "12", "--resume", "latest"])
    skipped = [r.getMessage() for r in caplog.records if "skipping checkpoint" in r.getMessage()]
    assert len(skipped) == 1 and "step_0000012" in skipped[0]
    # Resumed exactly from step 8: the same final loss as the uninterrupted run.
    assert again["steps"] == 12 and again["final_train_loss"] == first["final_train_loss"]
    assert names(out) == ["step_0000008", "step_0000012"]  # step 12 written again, intact
    assert ckpt.verify(ckpt.step_dir(out, 12)) is None
    with open(out / "metrics.csv") as f:  # steps 9..12 ran twice, each is in the log once
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(1, 13))
