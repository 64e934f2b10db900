"""assd.fastest: an exact sampler chosen by timing candidates on the model itself."""

from __future__ import annotations

import torch

import assd
from assd.backends.toy import ToyASARM
from assd.samplers import auto


def test_fastest_times_every_candidate_and_picks_the_quickest(monkeypatch):
    model = ToyASARM(4, 12, seed=1, draft_head=True)
    ranked = auto.calibrate(model)
    names = {d["sampler"].name for d in ranked}
    assert names == {s.name for s in auto.candidates(model)}
    assert "sequential" in names and any("head" in n for n in names)
    timed = [d["seconds_per_token"] for d in ranked if len(d["runs"]) == auto.REPEATS]
    assert timed == sorted(timed) and all(d["seconds_per_token"] > 0 for d in ranked)
    import statistics

    for d in ranked:  # the median of its round-robin runs, the warm-up not among them
        assert len(d["runs"]) in (1, auto.REPEATS)
        assert d["seconds_per_token"] == statistics.median(d["runs"])
    full = [d for d in ranked if len(d["runs"]) == auto.REPEATS]
    assert ranked[: len(full)] == full, "fully timed candidates rank first"
    assert any(d["sampler"] == assd.Sequential() for d in full), "Sequential is never pruned"
    assert all(getattr(d["sampler"], "exact", True) for d in ranked)

    fake = [
        {"sampler": assd.ASSD(2, draft="head"), "seconds_per_token": 1e-4},
        {"sampler": assd.Sequential(), "seconds_per_token": 2e-4},
    ]
    assert assd.fastest(model, calibration=fake) == assd.ASSD(2, draft="head")
    # Within the margin of sequential decoding: sequential (never slower beyond noise) ...
    close = [
        {"sampler": assd.ASSD(2, draft="head"), "seconds_per_token": 0.97e-4},
        {"sampler": assd.Sequential(), "seconds_per_token": 1e-4},
        {"sampler": assd.ASSD(3, one_call=True), "seconds_per_token": 1.5e-4},
    ]
    assert assd.fastest(model, calibration=close) == assd.Sequential()
    # ... unless the fastest speculative form is asked for.
    assert assd.fastest(model, calibration=close, speculative=True) == assd.ASSD(2, draft="head")


def test_fastest_is_cached_per_model_device_and_temperature(monkeypatch):
    model = ToyASARM(3, 8, seed=2)
    calls = []

    def fake_calibrate(m, temperature=1.0, cancel=None):
        calls.append(temperature)
        return [{"sampler": assd.Sequential(temperature), "seconds_per_token": 1.0}]

    monkeypatch.setattr(auto, "calibrate", fake_calibrate)
    assert assd.fastest(model) == assd.Sequential()
    assert assd.fastest(model) == assd.Sequential()
    assert assd.fastest(model, temperature=0.5) == assd.Sequential(0.5)
    assert calls == [1.0, 0.5]
    # Models without a head are never offered head drafts.
    assert not any(getattr(s, "draft", "") == "head" for s in auto.candidates(model))


def test_the_calibration_problem_is_what_a_user_asks_for():
    """95% of a model-written text masked, decoded left to right: the paper's setting."""
    model = ToyASARM(4, 40, seed=3)
    seen = []
    real = auto.Sequential.step

    def spy(self, state, session, rng):
        seen.append((int(state.n[0]), int(state.end[0])))
        return real(self, state, session, rng)

    import pytest

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(auto.Sequential, "step", spy)
        auto.calibrate(model, length=40)
    starts = [n for n, end in seen if end == 40]
    assert starts[0] == 1  # the calibration text: written from one visible token
    assert 2 in starts[:3] or starts.count(2) >= 1  # then re-masked: 2 visible of 40 (95%)
    torch.manual_seed(0)


def test_a_candidate_is_pruned_only_beyond_PRUNE_times_the_fastest_of_its_kind():
    cands = [assd.Sequential(), assd.ASSD(2, draft="head"), assd.ASSD(3, one_call=True)]
    # Sequential 10, head 20, one-call 25: the speculative forms are compared with each other
    # (speculative=True must still find the fastest of them), Sequential with itself.
    runs = [[10.0], [20.0], [25.0]]
    assert [auto._pruned(cands, runs, i) for i in range(3)] == [False, False, False]
    runs = [[10.0], [20.0], [26.1]]  # 26.1 > 1.3 * 20
    assert [auto._pruned(cands, runs, i) for i in range(3)] == [False, False, True]


def test_calibration_warms_up_eager_cpu_models_on_a_short_problem(monkeypatch):
    from assd.samplers import run

    model = ToyASARM(4, 40, seed=1, draft_head=True)
    widths = []
    real = run.sample

    def spy(m, batch, sampler, generator=None, **kw):
        widths.append(batch.tokens.shape[1])
        return real(m, batch, sampler, generator, **kw)

    monkeypatch.setattr(run, "sample", spy)
    monkeypatch.setattr(auto, "PRUNE", float("inf"))  # nothing pruned: every candidate timed
    auto.calibrate(model, length=40)
    n = len(auto.candidates(model))
    # the calibration text, n short warm-ups, then n * REPEATS timed runs at full width
    assert widths == [40] + [16] * n + [40] * (n * auto.REPEATS)


def test_calibration_drops_a_clearly_slower_candidate_after_one_timed_pass(monkeypatch):
    import time

    from assd.samplers import run

    model = ToyASARM(4, 12, seed=1, draft_head=True)
    slow = assd.ASSD(3, one_call=True)
    real = run.sample

    def sample(m, batch, sampler, generator=None, **kw):
        if sampler == slow:
            time.sleep(0.2)  # far beyond PRUNE times any other candidate's run
        return real(m, batch, sampler, generator, **kw)

    monkeypatch.setattr(run, "sample", sample)
    ranked = auto.calibrate(model)
    by_name = {d["sampler"]: d for d in ranked}
    assert len(by_name[slow]["runs"]) == 1, "timed once, then dropped"
    assert ranked[-1]["sampler"] == slow
    assert len(by_name[assd.Sequential()]["runs"]) == auto.REPEATS


def test_a_cancelled_calibration_stops_between_runs_and_caches_nothing(monkeypatch):
    import threading

    import pytest

    from assd.samplers import run

    toy = ToyASARM(4, 10, seed=7)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(assd.CalibrationCancelled):
        auto.calibrate(toy, cancel=cancel)  # set before: not one run
    real, calls = run.sample, []

    def counting(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            cancel.set()
        return real(*a, **k)

    cancel.clear()
    monkeypatch.setattr(run, "sample", counting)
    with pytest.raises(assd.CalibrationCancelled):
        assd.fastest(toy, cancel=cancel)
    assert len(calls) == 3, "runs went on after the event was set"
    assert assd.fastest(toy, wait=False) is None, "a cancelled calibration must cache nothing"


def test_a_calibration_queued_behind_another_stops_when_cancelled():
    """A dropped model must not wait (in memory) for another model's whole calibration."""
    import threading

    toy = ToyASARM(4, 10, seed=8)
    cancel, outcome = threading.Event(), []

    def queued():
        try:
            assd.fastest(toy, cancel=cancel)
            outcome.append("measured")
        except assd.CalibrationCancelled:
            outcome.append("cancelled")

    with auto._CALIBRATING:  # another model's calibration holds the lock
        t = threading.Thread(target=queued)
        t.start()
        t.join(timeout=0.5)
        assert t.is_alive(), "it must queue while another calibration runs"
        cancel.set()
        t.join(timeout=5)
        assert not t.is_alive() and outcome == ["cancelled"]
    assert auto._CALIBRATING.acquire(timeout=1)  # the lock is free again
    auto._CALIBRATING.release()
