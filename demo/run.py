"""One demo run: parse the input, run the lanes, replay them in measured time, collect statistics.

``stream`` is a plain generator of :class:`Frame` s (no Gradio here): the UI maps frames to
components, the tests inspect them directly. The lanes (an exact ASSD sampler, sequential
decoding and unverified parallel decoding) run on the same input, round by round, each timed on
its own. Frames replay those measured times, optionally slowed down: a lane's round appears when
the replay clock reaches the time that lane had spent, so the lane that finishes first on the
page is the one that was faster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace

import torch

import assd
from assd.text import Infill, decode, infills_to_batch, width_step

from .inputs import build_infill
from .models import DemoError, ModelCache
from .render import Pieces, TokenView, panel_html
from .stats import RunStats

log = logging.getLogger(__name__)

# value -> label shown in the UI
SAMPLERS = {
    "fastest": "fastest ASSD (the library's measured choice of form and k for this model and device)",
    "assd": "ASSD, the paper's (a draft call + a verify call per round)",
    "one-call": "ASSD one-call (one call per round: the fewest calls)",
    "sequential": "sequential (one token per call)",
}
ORDERS = ("random", "left-to-right")
DEMO_MAX_TOKENS = 1024  # for models that declare no maximum length
FRAME_S = 0.1  # at most this long between frames while the replay is behind the computation


@dataclass
class Request:
    """Everything the user chose. ``rate`` is a fraction in (0, 1]; ``slow``: the replay is this
    many times slower than measured (0: no waiting at all, frames as fast as computed)."""

    text: str
    model: str = "prose"
    revision: str | None = None
    mask_mode: str = "markup"
    rate: float = 0.5
    sampler: str = "fastest"
    k: int = 5
    temperature: float = 1.0
    seed: int = 0
    order: str = "random"
    compare: bool = True
    unverified_k: int = 3
    slow: float = 0.0


@dataclass
class Frame:
    """One update of the page."""

    panels: list[str]  # HTML of each lane
    stats: list[RunStats]
    text: str = ""  # the completed text of the first (exact) lane, once done
    message: str = ""  # a readable error ("" when none)
    done: bool = False
    error: bool = False
    hidden: list[str] = field(default_factory=list)  # originals of [HIDE] spans
    tokens: list[list[int]] = field(default_factory=list)  # each lane's token ids so far
    texts: list[str] = field(default_factory=list)  # each lane's completed text, once done
    max_length: int | None = None


def exact_sampler(
    kind: str, model, k: int, temperature: float, wait: bool = True
) -> tuple[object, str, str]:
    """-> (sampler, its display name, lane kind). ``wait=False``: while "fastest" is still being
    measured (in the background), a provisional form instead of waiting for the measurement.
    "fastest" at a temperature other than the page's default 1.0 is never measured inside a
    request (a calibration takes half a minute on a 2-core CPU): the form measured at 1.0 is
    used at the request's temperature (still exact: only the speed could differ)."""
    if kind == "fastest":
        # The fastest speculative form: the page compares it with sequential decoding itself.
        default = temperature == 1.0
        s = assd.fastest(model, temperature=temperature, speculative=True, wait=wait and default)
        if s is None and not default:
            s = assd.fastest(model, speculative=True, wait=wait)
            if s is not None and "temperature" in {f.name for f in fields(s)}:
                s = replace(s, temperature=temperature)
                return s, f"fastest ASSD: {s.name} (the form measured at temperature 1)", "assd"
            s = None
        if s is None:
            s = provisional(model, temperature)
            return s, f"ASSD: {s.name} (the fastest form is still being measured)", "assd"
        return s, f"fastest ASSD: {s.name}", "assd"
    if kind == "assd":
        return assd.ASSD(k=k, temperature=temperature), f"ASSD (k={k})", "assd"
    if kind == "one-call":
        s = assd.ASSD(k=k, temperature=temperature, one_call=True)
        return s, f"ASSD one-call (k={k})", "assd"
    if kind == "sequential":
        return assd.Sequential(temperature=temperature), "sequential", "sequential"
    raise DemoError(f"Unknown sampler {kind!r}: choose one of {', '.join(SAMPLERS)}.")


def provisional(model, temperature: float):
    """The form served while "fastest" is measured: the draft head with k = 2 where the model
    has one (the fastest form in most of our measurements, CPU and GPU), else the paper's ASSD
    with a bonus row."""
    if getattr(model, "has_draft_head", False):
        return assd.ASSD(k=2, temperature=temperature, draft="head")
    return assd.ASSD(k=5, temperature=temperature, bonus=True)


class Lane:
    """One sampler over one batch: its view, statistics, and the next round computed ahead."""

    def __init__(
        self, lm, inf: Infill, batch, sampler, title: str, kind: str, seed: int, k=None
    ) -> None:
        self.kind = kind
        g = torch.Generator().manual_seed(seed)
        self.events = assd.generate(lm.model, batch, sampler, g)
        self.view = TokenView.from_infill(inf.ids, inf.mask)
        self.stats = RunStats(title, inf.n_masked, kind, k)
        self.tokens: list[int] = list(inf.ids)
        self.latest = 0
        self.clock = 0.0  # measured seconds of computation, the pending round included
        self.pending: assd.RoundEvent | None = None
        self.compute()

    def compute(self) -> None:
        """Run the next round now, timed; it is shown when the replay reaches its time."""
        t0 = time.perf_counter()
        self.pending = next(self.events, None)
        self.clock += time.perf_counter() - t0

    def apply(self) -> None:
        """Show the pending round, then compute the one after it."""
        event, s = self.pending, self.stats
        self.tokens = event.tokens[0].tolist()
        trace = event.traces[0]
        if trace is not None:
            self.latest = event.round
            self.view.apply(self.tokens, trace, event.round, self.kind)
            s.add(trace)
        s.nfe, s.rounds, s.generated = event.nfe[0], event.rounds[0], event.generated[0]
        s.done, s.wall_s = bool(event.done[0]), self.clock
        s.history.append((s.wall_s, s.nfe, s.generated))
        self.compute()

    def close(self) -> None:
        self.events.close()  # ends the model session: its workspace goes back to the engine

    def html(self, pieces: Pieces) -> str:
        s = self.stats
        status = "done" if s.done else ("running" if s.rounds else "ready")
        return panel_html(s.name, self.view, pieces, status, s.counters(), self.latest, s.colour)


def stream(cache: ModelCache, req: Request) -> Iterator[Frame]:
    """Yield frames while the lanes infill the input. Never raises on bad input."""
    try:
        yield from _stream(cache, req)
    except DemoError as e:
        yield Frame([], [], message=str(e), done=True, error=True)
    except (ValueError, TypeError) as e:  # the library's readable errors
        yield Frame([], [], message=_sentence(e), done=True, error=True)
    except Exception as e:  # a bug: log it, keep the page readable
        log.exception("demo run failed")
        msg = f"Something went wrong ({type(e).__name__}: {e}). Try another input or model."
        yield Frame([], [], message=msg, done=True, error=True)


def _stream(cache: ModelCache, req: Request) -> Iterator[Frame]:
    check_request(req)
    lm = cache.get(req.model, req.revision)
    g = torch.Generator().manual_seed(int(req.seed))
    inf = build_infill(req.text, lm.tokenizer, req.mask_mode, req.rate, g, max_tokens(lm))
    batch = infills_to_batch(
        [inf],
        order=req.order,
        generator=g,
        pad_to=width_step(lm.model),  # compiled rounds: few widths, few compilations
        max_length=lm.model.max_length,
    )
    lanes = make_lanes(lm, inf, batch, req, wait=not cache.calibrating(lm.model))
    try:
        yield from _replay(lm, inf, batch, lanes, req.slow)
    finally:
        for lane in lanes:
            lane.close()


def make_lanes(lm, inf: Infill, batch, req: Request, wait: bool = True) -> list[Lane]:
    k, t, seed = int(req.k), float(req.temperature), int(req.seed)
    sampler, title, kind = exact_sampler(req.sampler, lm.model, k, t, wait)
    lanes = [Lane(lm, inf, batch, sampler, title, kind, seed, getattr(sampler, "k", None))]
    if req.compare:
        if kind != "sequential":
            seq = assd.Sequential(temperature=t)
            lanes.append(Lane(lm, inf, batch, seq, "sequential", "sequential", seed))
        m = int(req.unverified_k)
        mf = assd.MeanField(k=m, temperature=t)
        title = f"unverified parallel ({m} tokens/call)"
        lanes.append(Lane(lm, inf, batch, mf, title, "unverified", seed, m))
    return lanes


def _replay(lm, inf: Infill, batch, lanes: list[Lane], slow: float) -> Iterator[Frame]:
    pieces = Pieces(lm.tokenizer)
    L = len(inf.ids)

    def frame(done: bool = False) -> Frame:
        texts = [decode(lm.tokenizer, lane.tokens, length=L) for lane in lanes] if done else []
        return Frame(
            [lane.html(pieces) for lane in lanes],
            [lane.stats.snapshot() for lane in lanes],
            texts[0] if texts else "",
            done=done,
            hidden=list(inf.hidden),
            tokens=[list(lane.tokens)[:L] for lane in lanes],  # without width padding
            texts=texts,
            max_length=max_tokens(lm),
        )

    yield frame()
    start = last = time.perf_counter()
    while True:
        live = [lane for lane in lanes if lane.pending is not None]
        if not live:
            break
        lane = min(live, key=lambda x: x.clock)  # the next round on the merged timeline
        wait = lane.clock * slow - (time.perf_counter() - start)
        if wait > 0:
            time.sleep(wait)
        lane.apply()
        nxt = min((x.clock for x in lanes if x.pending is not None), default=None)
        if nxt is None:
            break
        now = time.perf_counter()
        # Show this state if it will stay on screen for a while, else at most every FRAME_S.
        if nxt * slow - (now - start) > 0.015 or now - last >= FRAME_S:
            yield frame()
            last = now
    for lane in lanes:  # the exact log-likelihood of each result: one call, not timed
        done = batch.with_tokens(torch.tensor([lane.tokens], dtype=torch.long))
        lane.stats.log_likelihood = float(assd.log_likelihood(lm.model, done)[0])
    yield frame(done=True)


def max_tokens(lm: assd.Loaded) -> int:
    """The model's maximum length, or a cap that keeps a demo run interactive."""
    return lm.model.max_length or DEMO_MAX_TOKENS


def check_request(req: Request) -> None:
    """Validate the knobs before any work (the UI constrains them; the API may not)."""
    if req.sampler not in SAMPLERS:
        raise DemoError(f"Unknown sampler {req.sampler!r}: choose one of {', '.join(SAMPLERS)}.")
    if req.order not in ORDERS:
        raise DemoError(f"Unknown decoding order {req.order!r}: choose one of {', '.join(ORDERS)}.")
    if not _whole(req.k) or not 1 <= req.k <= 64:
        raise DemoError(f"k (proposals per round) must be a whole number in [1, 64], got {req.k}.")
    if not _whole(req.unverified_k) or not 2 <= req.unverified_k <= 16:
        raise DemoError(
            "The unverified lane's tokens per call must be a whole number in [2, 16], "
            f"got {req.unverified_k}."
        )
    if not isinstance(req.temperature, (int, float)) or not 0 < req.temperature <= 10:
        raise DemoError(f"The temperature must lie in (0, 10], got {req.temperature}.")
    if not _whole(req.seed) or not 0 <= req.seed < 2**63:
        raise DemoError(f"The seed must be a whole number in [0, 2^63), got {req.seed}.")
    if not isinstance(req.slow, (int, float)) or not 0 <= req.slow <= 100:
        raise DemoError(f"The slow-motion factor must lie in [0, 100], got {req.slow}.")


def _whole(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and float(x).is_integer()


def _sentence(e: Exception) -> str:
    msg = str(e).strip() or type(e).__name__
    return msg[0].upper() + msg[1:] + ("" if msg.endswith(".") else ".")
