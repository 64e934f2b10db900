"""The Gradio page: inputs on the left, the live infilling and its statistics on the right."""

from __future__ import annotations

import logging
import random
from collections import deque
from dataclasses import asdict

import gradio as gr

from . import examples
from .inputs import HELP, mask_selection
from .models import EMBEDDED, HUB_EXAMPLES, DemoError, ModelCache
from .render import CSS, legend_html, message_html
from .run import ORDERS, SAMPLERS, Request, stream
from .stats import RunStats, rounds_plot, stats_html

log = logging.getLogger(__name__)

INTRO = """
# Any-Subset Speculative Decoding: exact parallel infilling
An any-subset autoregressive model (AS-ARM) can fill **any** set of masked positions in
**any order**. ASSD drafts several masked tokens in parallel and verifies them with one more call
of the same model: every kept token follows the model's exact joint distribution, as if it had
been decoded one token per call, yet it takes **fewer network calls** (never more than there are
masked tokens). Mark what to fill, press **Run**, and watch the rounds commit their tokens.
"""


def build(
    default_model: str = "prose",
    default_revision: str | None = None,
    cache: ModelCache | None = None,
) -> gr.Blocks:
    """The whole page (not launched). Models are loaded on the first run that needs them."""
    cache = cache or ModelCache()
    choices = list(dict.fromkeys([default_model, *EMBEDDED, *HUB_EXAMPLES]))

    def run(model, revision, text, mode, rate, sampler, k, temperature, seed, order, ll, delay):
        req = Request(
            text=text, model=model, revision=revision or None, mask_mode=mode,
            rate=float(rate or 0) / 100, sampler=sampler, k=_int(k), temperature=temperature,
            seed=_int(seed), order=order, log_likelihood=bool(ll), delay=float(delay or 0),
        )  # fmt: skip
        first = True
        for f in stream(cache, req):
            if f.error:
                yield (
                    message_html(f.message),
                    "",
                    gr.update(value="", visible=False),
                    "",
                    None,
                    "",
                )
                return
            stats = stats_html(f.stats, f.hidden) if (f.done or first) else _live_stats(f.stats)
            two = len(f.panels) > 1
            yield (
                "",
                f.panels[0],
                gr.update(value=f.panels[1] if two else "", visible=two),
                stats,
                rounds_plot(f.stats) if f.done else (None if first else gr.skip()),
                f.text if f.done else ("" if first else gr.skip()),
            )
            first = False

    def on_select(evt: gr.SelectData):
        idx = evt.index
        if isinstance(idx, (list, tuple)) and len(idx) == 2 and None not in idx:
            return [int(idx[0]), int(idx[1])]
        return [None, None]

    def do_mask(text, sel, model, revision):
        try:
            lm = cache.get(model, revision)
            start, end = (sel or [None, None])[:2]
            return mask_selection(text or "", start, end, lm.tokenizer), "", None
        except DemoError as e:
            return gr.skip(), message_html(str(e)), None
        except Exception as e:  # keep tracebacks out of the page
            log.exception("masking the selection failed")
            return gr.skip(), message_html(f"Could not mask the selection ({e})."), None

    def api_infill(
        text: str,
        model: str = default_model,
        revision: str = default_revision or "",
        sampler: str = "assd",
        k: int = 5,
        temperature: float = 1.0,
        seed: int = 0,
        order: str = "left-to-right",
        mask_mode: str = "markup",
        mask_rate: float = 50.0,
        log_likelihood: bool = False,
    ) -> dict:
        """Infill `text` (mask markup: [MASK], [MASK:n], [HIDE]..[/HIDE]); returns the completed
        text and per-sampler statistics. Errors come back as readable messages."""
        req = Request(
            text=text, model=model, revision=revision or None, mask_mode=mask_mode,
            rate=float(mask_rate) / 100, sampler=sampler, k=k, temperature=temperature,
            seed=seed, order=order, log_likelihood=log_likelihood,
        )  # fmt: skip
        last = deque(stream(cache, req), maxlen=1)  # run to completion, keep the final frame
        frame = last[0] if last else None
        if frame is None or frame.error:
            raise gr.Error(frame.message if frame else "nothing happened")
        return {"text": frame.text, "stats": [_stats_dict(s) for s in frame.stats]}

    with gr.Blocks(title="ASSD: exact parallel infilling") as blocks:
        gr.Markdown(INTRO)
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                with gr.Row():
                    model = gr.Dropdown(
                        choices, value=default_model, allow_custom_value=True, label="Model",
                        info="embedded 'prose' / 'code' (offline), a local directory or a Hub id",
                        scale=3, elem_id="model",
                    )  # fmt: skip
                    revision = gr.Textbox(
                        default_revision or "", label="Revision", placeholder="e.g. nlp, code",
                        info="Hub models only", scale=1, elem_id="revision",
                    )  # fmt: skip
                text = gr.Textbox(
                    lines=9, max_lines=30, label="Text or code: mark what to fill",
                    placeholder="Write or paste text, then select a span and press 'Mask selection', "
                    "or type [MASK:n].", elem_id="input-text",
                )  # fmt: skip
                gr.Markdown(HELP, elem_classes=["assd-help"])
                with gr.Row():
                    mask_btn = gr.Button("Mask selection", size="sm", elem_id="mask-selection")
                    mode = gr.Radio(
                        [("markup", "markup"), ("random X%", "random")], value="markup",
                        label="Masking", scale=2, elem_id="mask-mode",
                    )  # fmt: skip
                    rate = gr.Slider(5, 100, value=50, step=5, label="Random mask X%", scale=2)
                with gr.Accordion("Decoding", open=True):
                    sampler = gr.Radio(
                        [(label, value) for value, label in SAMPLERS.items()], value="assd",
                        label="Sampler", elem_id="sampler",
                    )  # fmt: skip
                    with gr.Row():
                        k = gr.Slider(1, 16, value=5, step=1, label="k (drafts per round)")
                        temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature")
                    with gr.Row():
                        seed = gr.Number(0, precision=0, minimum=0, label="Seed", elem_id="seed")
                        order = gr.Radio(
                            list(ORDERS), value="left-to-right", label="Decoding order"
                        )
                    with gr.Row():
                        ll = gr.Checkbox(False, label="Exact log-likelihood of the result")
                        delay = gr.Slider(
                            0, 1, value=0.15, step=0.05, label="Slow motion (s per round)", elem_id="delay",
                            info="display only: not counted in the wall-clock",
                        )  # fmt: skip
                with gr.Row():
                    run_btn = gr.Button("Run", variant="primary", elem_id="run")
                    reseed_btn = gr.Button("New seed & run", elem_id="reseed")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
                kind = gr.Textbox("", visible=False, label="Model")  # of the last example
                gr.Examples(
                    [[*e, "prose"] for e in examples.PROSE], [text, mode, rate, kind],
                    label="Prose examples", elem_id="ex-prose",
                )  # fmt: skip
                gr.Examples(
                    [[*e, "code"] for e in examples.CODE], [text, mode, rate, kind],
                    label="Code examples", elem_id="ex-code",
                )  # fmt: skip
            with gr.Column(scale=6):
                gr.HTML(legend_html(), elem_id="legend")
                status = gr.HTML("", elem_id="status")
                with gr.Row():
                    panel_a = gr.HTML(
                        message_html("Pick an example or write your own, then press Run.", "note"),
                        elem_id="panel-a",
                    )  # fmt: skip
                    panel_b = gr.HTML("", visible=False, elem_id="panel-b")
                stats = gr.HTML("", elem_id="stats")
                plot = gr.Plot(show_label=False, elem_id="plot")
                output = gr.Code(
                    "", language=None, label="Completed text (copy it with the button)",
                    interactive=False, wrap_lines=True, elem_id="output",
                )  # fmt: skip

        sel = gr.State([None, None])
        inputs = [
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
            ll,
            delay,
        ]
        outputs = [status, panel_a, panel_b, stats, plot, output]
        text.select(on_select, None, sel, queue=False)
        kind.change(suggest_model, [kind, model], model, queue=False)
        mask_btn.click(do_mask, [text, sel, model, revision], [text, status, sel])
        run_evt = run_btn.click(run, inputs, outputs, api_name="run", show_progress="minimal")
        reseed_evt = reseed_btn.click(
            lambda: random.randrange(1_000_000), None, seed, queue=False
        ).then(run, inputs, outputs, show_progress="minimal")
        stop_btn.click(None, None, None, cancels=[run_evt, reseed_evt])
        gr.api(api_infill, api_name="infill")
    return blocks


def launch(blocks: gr.Blocks, concurrency: int = 2, **kwargs):
    """Queue (bounded concurrency) and launch with the demo's styling."""
    blocks.queue(default_concurrency_limit=concurrency, max_size=64)
    return blocks.launch(css=CSS, theme=gr.themes.Soft(), **kwargs)


def suggest_model(kind: str, current: str) -> str:
    """Examples switch between the embedded models, never away from a model the user chose."""
    return kind if kind in EMBEDDED and current in EMBEDDED else current


def _live_stats(stats: list[RunStats]) -> str:
    """Cheap while streaming: the table without the summary."""
    return stats_html(stats)


def _stats_dict(s: RunStats) -> dict:
    d = asdict(s)
    d.update(tokens_per_call=s.tokens_per_call, acceptance_rate=s.acceptance_rate)
    return d


def _int(x) -> int:
    try:
        return int(x)
    except (TypeError, ValueError):
        return -1  # rejected with a message by the run's checks
