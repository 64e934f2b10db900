"""One demo run: parse the input, stream every sampler round by round, collect the statistics.

``stream`` is a plain generator of :class:`Frame` s (no Gradio here): the UI maps frames to
components, the tests inspect them directly. Rounds are streamed from ``assd.generate`` as they
happen; the optional delay only slows the display and is not counted in the wall-clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

import assd
from assd.text import Infill, decode, infills_to_batch

from .inputs import build_infill
from .models import DemoError, ModelCache
from .render import Pieces, TokenView, panel_html
from .stats import RunStats

log = logging.getLogger(__name__)

# value -> label shown in the UI
SAMPLERS = {
    "assd": "ASSD (paper: draft call + verify call)",
    "one-call": "ASSD one-call (fewest calls)",
    "sequential": "Sequential (one token per call)",
    "compare": "ASSD vs sequential, side by side",
}
ORDERS = ("left-to-right", "random")
DEMO_MAX_TOKENS = 1024  # for models that declare no maximum length


@dataclass
class Request:
    """Everything the user chose. ``rate`` is a fraction in (0, 1]."""

    text: str
    model: str = "prose"
    revision: str | None = None
    mask_mode: str = "markup"
    rate: float = 0.5
    sampler: str = "assd"
    k: int = 5
    temperature: float = 1.0
    seed: int = 0
    order: str = "left-to-right"
    log_likelihood: bool = False
    delay: float = 0.0


@dataclass
class Frame:
    """One update of the page."""

    panels: list[str]  # HTML of each live panel
    stats: list[RunStats]
    text: str = ""  # the completed text (of the first sampler) once done
    message: str = ""  # a readable error ("" when none)
    done: bool = False
    error: bool = False
    hidden: list[str] = field(default_factory=list)  # originals of [HIDE] spans
    tokens: list[list[int]] = field(default_factory=list)  # each sampler's token ids so far
    max_length: int | None = None


def make_sampler(kind: str, k: int, temperature: float) -> tuple[object, str]:
    """-> (sampler, its display name)."""
    k = int(k)
    if kind == "assd":
        return assd.ASSD(k=k, temperature=temperature), f"ASSD (k={k})"
    if kind == "one-call":
        return assd.ASSD(k=k, temperature=temperature, one_call=True), f"ASSD one-call (k={k})"
    if kind == "sequential":
        return assd.Sequential(temperature=temperature), "Sequential"
    raise DemoError(f"Unknown sampler {kind!r}: choose one of {', '.join(SAMPLERS)}.")


class Lane:
    """One sampler streaming over one batch; its view, statistics and timing."""

    def __init__(self, lm: assd.Loaded, inf: Infill, batch: assd.Batch, kind: str, req: Request):
        self.sampler, self.title = make_sampler(kind, req.k, req.temperature)
        self.sequential = kind == "sequential"
        g = torch.Generator().manual_seed(int(req.seed))
        self.events = assd.generate(lm.model, batch, self.sampler, g)
        self.view = TokenView.from_infill(inf.ids, inf.mask)
        self.stats = RunStats(self.title, inf.n_masked, self.sequential)
        self.tokens: list[int] = list(inf.ids)
        self.latest = 0

    def step(self) -> bool:
        """Run one round; False when the sampler has finished."""
        if self.stats.done:
            return False
        t0 = time.perf_counter()
        event = next(self.events, None)
        self.stats.wall_s += time.perf_counter() - t0
        if event is None:
            self.stats.done = True
            return False
        self.tokens = event.tokens[0].tolist()
        trace = event.traces[0]
        if trace is not None:
            self.latest = event.round
            self.view.apply(self.tokens, trace, event.round, self.sequential)
            self.stats.add(trace)
        s = self.stats
        s.nfe, s.rounds, s.generated = event.nfe[0], event.rounds[0], event.generated[0]
        s.done = bool(event.done[0])
        return True

    def html(self, pieces: Pieces) -> str:
        s = self.stats
        counters = f"round {s.rounds} · {s.nfe} calls · {s.generated}/{s.masked} tokens"
        status = "done" if s.done else ("running" if s.rounds else "ready")
        return panel_html(self.title, self.view, pieces, status, counters, self.latest)


def stream(cache: ModelCache, req: Request) -> Iterator[Frame]:
    """Yield frames while the chosen sampler(s) infill the input. Never raises on bad input."""
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
    inf, hidden = build_infill(req.text, lm.tokenizer, req.mask_mode, req.rate, g, max_tokens(lm))
    batch = infills_to_batch([inf], order=req.order, generator=g)
    kinds = ["assd", "sequential"] if req.sampler == "compare" else [req.sampler]
    lanes = [Lane(lm, inf, batch, kind, req) for kind in kinds]
    pieces = Pieces(lm.tokenizer)

    def frame(done: bool = False, text: str = "") -> Frame:
        return Frame(
            [lane.html(pieces) for lane in lanes], [lane.stats.snapshot() for lane in lanes], text,
            done=done, hidden=hidden, max_length=max_tokens(lm),
            tokens=[list(lane.tokens) for lane in lanes],
        )  # fmt: skip

    yield frame()
    i = 0
    # Step every lane each time (a list, not a lazy any), alternating who goes first.
    while any([lane.step() for lane in (lanes if i % 2 == 0 else lanes[::-1])]):
        i += 1
        yield frame()
        if req.delay > 0:
            time.sleep(req.delay)
    if req.log_likelihood:
        for lane in lanes:
            done = batch.with_tokens(torch.tensor([lane.tokens], dtype=torch.long))
            lane.stats.log_likelihood = float(assd.log_likelihood(lm.model, done)[0])
    yield frame(True, decode(lm.tokenizer, lanes[0].tokens, length=len(inf.ids)))


def max_tokens(lm: assd.Loaded) -> int:
    """The model's maximum length, or a cap that keeps a demo run interactive."""
    return lm.model.max_length or DEMO_MAX_TOKENS


def check_request(req: Request) -> None:
    """Validate the knobs before any work (the UI constrains them; the API may not)."""
    if req.sampler not in SAMPLERS:
        raise DemoError(f"Unknown sampler {req.sampler!r}: choose one of {', '.join(SAMPLERS)}.")
    if req.order not in ORDERS:
        raise DemoError(f"Unknown decoding order {req.order!r}: choose one of {', '.join(ORDERS)}.")
    if not isinstance(req.k, (int, float)) or int(req.k) != req.k or not 1 <= req.k <= 64:
        raise DemoError(
            f"k (tokens drafted per round) must be a whole number in [1, 64], got {req.k}."
        )
    if not isinstance(req.temperature, (int, float)) or not 0 < req.temperature <= 10:
        raise DemoError(f"The temperature must lie in (0, 10], got {req.temperature}.")
    if req.seed is None or int(req.seed) != req.seed or req.seed < 0:
        raise DemoError(f"The seed must be a whole number >= 0, got {req.seed}.")
    if not 0 <= req.delay <= 5:
        raise DemoError(f"The display delay must lie in [0, 5] seconds, got {req.delay}.")


def _sentence(e: Exception) -> str:
    msg = str(e).strip() or type(e).__name__
    return msg[0].upper() + msg[1:] + ("" if msg.endswith(".") else ".")
