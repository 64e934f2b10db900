"""The Gradio page: input, Run and examples on the left; the lanes and their statistics on the
right, all in the first screen of a laptop; the rest of the options in a collapsed panel."""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict

import gradio as gr

from .examples import DEFAULT, EXAMPLES
from .inputs import MARKUP_HELP, hide_selection
from .models import DemoError, ModelCache, parse_spec, spec_of
from .render import CSS, legend_html, message_html
from .run import ORDERS, SAMPLERS, Request, stream
from .server import MAX_BODY, SESSIONS, BodyLimit, trim_memory
from .stats import RunStats, progress_plot, stats_html

log = logging.getLogger(__name__)

INTRO = """
<div class="assd-intro">
<h2 style="margin: 2px 0 4px 0; font-size: 1.35em">Any-Subset Speculative Decoding: exact parallel
infilling</h2>
<p><b>ASSD</b> drafts several masked tokens per network call and keeps only those the model's
exact verification accepts: its text follows the model's distribution exactly, in fewer calls
than <b>sequential</b> decoding. <b>Unverified parallel decoding</b> (what a diffusion LM does)
saves calls too, but its text no longer follows the model: compare the log-likelihoods.
<small>The embedded models are tiny: <code>prose</code> (English Wikipedia) and <code>code</code>
(Python: the standard library, sympy, django, transformers) are 10.6M-parameter XLNet AS-ARMs
(int8 weights, 256-token context) with 1M-parameter draft heads, each trained for minutes on one
GPU: expect text with the right shape and little sense. What the page measures is real.</small>
</p>
</div>
"""
REPLAY_NOTE = (
    "Each lane replays its own measured wall-clock, slowed down {slow:g}x (Options): the lane "
    "that finishes first is the fastest on this machine."
)
ORDER_NOTE = (
    "Why a random decoding order by default: on the embedded prose model the paper's ASSD (k=5) "
    "needs about half the calls of sequential decoding in a random order (acceptance about 70%), "
    "but 0.9x as many left to right (acceptance about 26%): drafts for scattered positions "
    "depend less on each other, so more of them pass verification. Exactness holds in any order."
)
SELECTION_JS = """(text, _) => {
  const t = document.querySelector('#input-text textarea');
  return [t ? t.value : text, t ? `${t.selectionStart},${t.selectionEnd}` : ''];
}"""
STOP_JS = """() => {
  const mark = () => document.querySelectorAll('#lanes .assd-badge.running, #lanes .assd-badge.ready')
    .forEach(b => { b.className = 'assd-badge stopped'; b.textContent = 'stopped'; });
  mark(); setTimeout(mark, 300); setTimeout(mark, 1500);
}"""
PAGE_CSS = """
.gradio-container {max-width: 1600px !important; padding-top: 4px !important;}
#input-text textarea {font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.85em;}
.assd-help {font-size: 0.8em;}
#run, #stop, #reseed, #mask-selection {white-space: nowrap;}
"""


def build(
    default_model: str = "prose",
    default_revision: str | None = None,
    cache: ModelCache | None = None,
) -> gr.Blocks:
    """The whole page (not launched). The start-up model is always served."""
    cache = cache if cache is not None else ModelCache()  # not `or`: an empty cache is falsy
    default_spec = spec_of(*parse_spec(spec_of(default_model, default_revision)))
    cache.allow(*parse_spec(default_spec))
    choices = list(dict.fromkeys([default_spec, *cache.choices]))

    def request(
        model,
        revision,
        text,
        mode,
        rate,
        sampler,
        k,
        temperature,
        seed,
        order,
        compare,
        unverified_k,
        slow,
    ) -> Request:
        return Request(
            text=text,
            model=model,
            revision=revision or None,
            mask_mode=mode,
            rate=float(rate or 0) / 100,
            sampler=sampler,
            k=_num(k),
            temperature=_num(temperature),
            seed=_num(seed),
            order=order,
            compare=bool(compare),
            unverified_k=_num(unverified_k),
            slow=_num(slow),
        )

    def run(*args):
        req = request(*args)
        note = message_html(REPLAY_NOTE.format(slow=req.slow), "note") if req.slow else ""
        hidden = gr.update(value="", visible=False)  # the status line is for Mask selection
        first = True
        try:
            for f in stream(cache, req):
                if f.error:
                    yield hidden, message_html(f.message), "", None, ""
                    return
                if f.done:
                    stats = stats_html(f.stats, f.hidden)
                    yield hidden, "".join(f.panels), stats, progress_plot(f.stats), f.text
                elif first:
                    yield hidden, "".join(f.panels), note, None, ""
                else:
                    yield gr.skip(), "".join(f.panels), gr.skip(), gr.skip(), gr.skip()
                first = False
        finally:
            trim_memory()

    def do_mask(text, selection):
        """selection: "start,end" of the textarea's selection, read by SELECTION_JS on click."""
        try:
            start, end = (int(x) for x in (selection or "").split(","))
        except ValueError:
            start = end = None
        try:
            return hide_selection(text or "", start, end), gr.update(value="", visible=False)
        except DemoError as e:
            return gr.skip(), gr.update(value=message_html(str(e)), visible=True)

    def api_infill(
        text: str,
        model: str = default_spec,
        sampler: str = "fastest",
        k: int = 5,
        temperature: float = 1.0,
        seed: int = 0,
        order: str = "random",
        compare: bool = False,
        unverified_k: int = 4,
        mask_mode: str = "markup",
        mask_rate: float = 50.0,
        revision: str = "",
    ) -> dict:
        """Infill `text` (markup: [MASK], [MASK:n], [HIDE]text[/HIDE]). Returns the completed
        text, each lane's text and statistics (compare=True adds sequential decoding and
        unverified parallel decoding on the same input). Errors come back as readable messages."""
        req = Request(
            text=text,
            model=model,
            revision=revision or None,
            mask_mode=mask_mode,
            rate=float(mask_rate) / 100,
            sampler=sampler,
            k=k,
            temperature=temperature,
            seed=seed,
            order=order,
            compare=compare,
            unverified_k=unverified_k,
        )
        try:
            last = deque(stream(cache, req), maxlen=1)  # run to completion, keep the final frame
        finally:
            trim_memory()
        frame = last[0] if last else None
        if frame is None or frame.error:
            raise gr.Error(frame.message if frame else "nothing happened")
        return _result(frame)

    def api_run(
        text: str,
        model: str = default_spec,
        sampler: str = "fastest",
        k: int = 5,
        temperature: float = 1.0,
        seed: int = 0,
        order: str = "random",
        compare: bool = True,
        unverified_k: int = 4,
        slow: float = 0.0,
    ) -> Iterator[dict]:
        """Like /infill, streamed: one update per frame of the page's lanes ("done" on the last).
        slow: replay the measured time this many times slower (0, the default: no waiting)."""
        req = Request(
            text=text,
            model=model,
            sampler=sampler,
            k=k,
            temperature=temperature,
            seed=seed,
            order=order,
            compare=compare,
            unverified_k=unverified_k,
            slow=slow,
        )
        try:
            for frame in stream(cache, req):
                if frame.error:
                    raise gr.Error(frame.message)
                yield _result(frame)
        finally:
            trim_memory()

    with gr.Blocks(title="ASSD: exact parallel infilling") as blocks:
        # The public API first (the API page lists endpoints in this order).
        gr.api(api_infill, api_name="infill")
        gr.api(api_run, api_name="run")
        gr.HTML(INTRO)
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=360):
                text = gr.Textbox(
                    DEFAULT.text,
                    lines=6,
                    max_lines=16,
                    label="Text or code: mark what to fill",
                    placeholder="Write or paste text, then select a span and press 'Mask "
                    "selection', or type [MASK:n].",
                    elem_id="input-text",
                )
                with gr.Row():
                    run_btn = gr.Button("Run", variant="primary", elem_id="run", min_width=70)
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="stop", min_width=70)
                    reseed_btn = gr.Button("New seed", elem_id="reseed", min_width=110)
                    mask_btn = gr.Button("Mask selection", elem_id="mask-selection", min_width=150)
                kind = gr.Textbox(DEFAULT.model, visible=False, label="Model of the example")
                # Set by the examples, shown in the Options panel below.
                mode = gr.Radio(
                    [("markup", "markup"), ("random X%", "random")],
                    value=DEFAULT.mode,
                    label="Masking",
                    elem_id="mask-mode",
                    render=False,
                )
                rate = gr.Slider(
                    5,
                    100,
                    value=DEFAULT.rate,
                    step=5,
                    label="Random mask X%",
                    visible=DEFAULT.mode == "random",
                    elem_id="rate",
                    render=False,
                )
                gr.Examples(
                    [[e.text, e.mode, e.rate, e.model] for e in EXAMPLES],
                    [text, mode, rate, kind],
                    example_labels=[e.label for e in EXAMPLES],
                    label="Examples",
                    elem_id="examples",
                    examples_per_page=len(EXAMPLES),
                )
                gr.Markdown(MARKUP_HELP, elem_classes=["assd-help"])
                with gr.Accordion("Options", open=False, elem_id="options"):
                    with gr.Row():
                        model = gr.Dropdown(
                            choices,
                            value=default_spec,
                            allow_custom_value=cache.allow_any,
                            label="Model",
                            info="the models this server serves"
                            + (" (or any directory or Hub id)" if cache.allow_any else ""),
                            elem_id="model",
                            scale=3,
                        )
                        revision = gr.Textbox(
                            default_revision or "",
                            label="Revision",
                            placeholder="e.g. nlp, code",
                            visible=cache.allow_any,
                            elem_id="revision",
                            scale=1,
                        )
                    sampler = gr.Radio(
                        [(label, value) for value, label in SAMPLERS.items()],
                        value="fastest",
                        label="Exact sampler",
                        elem_id="sampler",
                    )
                    with gr.Row():
                        k = gr.Slider(
                            2,
                            16,
                            value=5,
                            step=1,
                            label="k (proposals per round)",
                            info="ASSD and one-call ('fastest' picks its own); k = 1 would spend "
                            "two calls per token",
                        )
                        temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature")
                    with gr.Row():
                        compare = gr.Checkbox(
                            True,
                            label="Also run sequential and unverified parallel decoding",
                            elem_id="compare",
                        )
                        unverified_k = gr.Slider(
                            2,
                            8,
                            value=4,
                            step=1,
                            label="Unverified lane: tokens per call",
                            elem_id="unverified-k",
                        )
                    with gr.Row():
                        seed = gr.Number(0, precision=0, minimum=0, label="Seed", elem_id="seed")
                        order = gr.Radio(
                            list(ORDERS),
                            value="random",
                            label="Decoding order",
                            info="among the masked positions",
                        )
                    with gr.Row():
                        mode.render()
                        rate.render()
                    slow = gr.Slider(
                        1,
                        50,
                        value=10,
                        step=1,
                        label="Slow motion: replay the measured time N times slower",
                        info="1 = real time; the wall-clock in the statistics is never slowed",
                        elem_id="slow",
                    )
            with gr.Column(scale=7, min_width=480):
                status = gr.HTML("", elem_id="status", visible=False)
                lanes = gr.HTML(
                    message_html("An example is ready: press Run.", "note"), elem_id="lanes"
                )
                stats = gr.HTML("", elem_id="stats")
                gr.HTML(legend_html() + message_html(ORDER_NOTE, "note"), elem_id="legend")
                plot = gr.Plot(show_label=False, elem_id="plot")
                output = gr.Code(
                    "",
                    language=None,
                    label="Completed text (first lane; copy it with the button)",
                    interactive=False,
                    wrap_lines=True,
                    lines=3,
                    max_lines=16,
                    elem_id="output",
                )

        private = dict(api_visibility="private")
        sel = gr.Textbox("", visible=False, label="Selection")
        mode.change(lambda m: gr.update(visible=m == "random"), mode, rate, queue=False, **private)
        compare.change(
            lambda c: gr.update(visible=bool(c)), compare, unverified_k, queue=False, **private
        )
        inputs = [model, revision, text, mode, rate, sampler, k, temperature, seed, order]
        inputs += [compare, unverified_k, slow]
        outputs = [status, lanes, stats, plot, output]
        kind.change(lambda e, m: suggest_model(e, m, choices), [kind, model], model, **private)
        mask_btn.click(
            do_mask, [text, sel], [text, status], js=SELECTION_JS, queue=False, **private
        )
        run_evt = run_btn.click(run, inputs, outputs, show_progress="hidden", **private)
        reseed_evt = reseed_btn.click(
            lambda: random.randrange(1_000_000), None, seed, queue=False, **private
        ).then(run, inputs, outputs, show_progress="hidden", **private)
        stop_btn.click(None, None, None, cancels=[run_evt, reseed_evt], js=STOP_JS, **private)
    return blocks


def launch(blocks: gr.Blocks, concurrency: int = 2, max_body: int = MAX_BODY, **kwargs):
    """Queue (bounded concurrency and length), cap request bodies and the sessions kept in
    memory (``demo.server``), launch with the styling."""
    from starlette.middleware import Middleware

    blocks.queue(default_concurrency_limit=concurrency, max_size=64)
    app_kwargs = {"middleware": [Middleware(BodyLimit, max_bytes=max_body)]}
    return blocks.launch(
        css=CSS + PAGE_CSS,
        theme=gr.themes.Soft(),
        app_kwargs=app_kwargs,
        state_session_capacity=SESSIONS,
        **kwargs,
    )


def suggest_model(example_model: str, current: str, choices: list[str]) -> str:
    """Examples switch between the embedded models when both are served, never away from a
    model the user chose."""
    embedded = {"prose", "code"}
    if example_model in choices and current in embedded and example_model in embedded:
        return example_model
    return current


def _result(frame) -> dict:
    return {
        "done": frame.done,
        "text": frame.text,
        "texts": frame.texts,
        "hidden": frame.hidden,
        "stats": [_stats_dict(s) for s in frame.stats],
    }


def _stats_dict(s: RunStats) -> dict:
    d = asdict(s)
    d.pop("history")
    d.update(
        exact=s.exact,
        tokens_per_call=s.tokens_per_call,
        tokens_per_s=s.tokens_per_s,
        acceptance_rate=None if s.acceptance_rate != s.acceptance_rate else s.acceptance_rate,
    )
    return d


def _num(x):
    """A number from a UI field (None or junk become -1, which the run's checks reject)."""
    if isinstance(x, bool) or x is None:
        return -1
    if isinstance(x, (int, float)):
        return int(x) if float(x).is_integer() else x
    try:
        return float(x)
    except (TypeError, ValueError):
        return -1
