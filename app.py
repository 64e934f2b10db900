"""ASSD demo: ``python app.py [--model prose] [--models prose,code] [--port N]``.

The app itself lives in ``demo/`` (testable without a browser); this file only parses flags.
On a Hugging Face Space it runs with the defaults (embedded models, CPU) and the ASSD_*
environment variables. A visitor can choose only the models named here: the start-up model and
the allow-list; ``--allow-any-model`` (local use only) also accepts any directory or Hub id.
"""

from __future__ import annotations

import argparse
import functools
import os

import torch

import assd
from demo.models import DemoError, ModelCache, parse_spec
from demo.server import MAX_BODY
from demo.ui import build, launch

TRUE = ("1", "true", "yes", "on")


def cpu_threads(concurrency: int) -> int:
    """Torch CPU threads per process: the usable cores shared among the concurrent runs.

    Measured on a 2-core CPU with the embedded models: a 64-token infill alone took 0.9-1.2 s
    on one thread against 1.2-1.8 s on two; two at a time the figures were mixed (1.1-2.0 s
    against 1.5-1.6 s); with other work on both cores two threads ran 4x slower than one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // concurrency)


def main(argv: list[str] | None = None) -> None:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--model",
        default=env("ASSD_MODEL", "prose"),
        help="the model selected at start: 'prose', 'code', a directory or a Hub id, optionally "
        "name@revision (env ASSD_MODEL)",
    )
    p.add_argument(
        "--revision",
        default=env("ASSD_REVISION") or None,
        help="Hub revision of --model, e.g. nlp (env ASSD_REVISION)",
    )
    p.add_argument(
        "--models",
        default=env("ASSD_MODELS", "prose,code"),
        help="comma-separated models visitors may choose besides --model, each name or "
        "name@revision (env ASSD_MODELS; default: prose,code)",
    )
    p.add_argument(
        "--allow-any-model",
        action="store_true",
        default=env("ASSD_ALLOW_ANY_MODEL", "").lower() in TRUE,
        help="also load any directory or Hub id a request names: for local use only, it lets "
        "requests read the server's disk and download any Hub repository",
    )
    p.add_argument("--host", default=None, help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 7860 or the next free)")
    p.add_argument("--share", action="store_true", help="also create a public gradio.live link")
    p.add_argument("--cache-size", type=int, default=2, help="models kept loaded at once")
    p.add_argument("--concurrency", type=int, default=2, help="runs served at the same time")
    p.add_argument(
        "--threads",
        type=int,
        default=int(env("ASSD_THREADS", "0") or 0) or None,
        help="torch CPU threads (env ASSD_THREADS; default: the cores divided among the "
        "--concurrency runs)",
    )
    p.add_argument("--max-body", type=int, default=MAX_BODY, help="largest request body, bytes")
    p.add_argument("--no-preload", action="store_true", help="load the model on the first run")
    p.add_argument(
        "--compile",
        action="store_true",
        default=env("ASSD_COMPILE", "").lower() in TRUE,
        help="sample with compiled rounds (assd.load(compile=True)): faster on a GPU after a "
        "compilation of tens of seconds per sampler, temperature and text width (64-token "
        "steps); the first run of each includes it in its timings (env ASSD_COMPILE)",
    )
    args = p.parse_args(argv)
    if args.cache_size < 1 or args.concurrency < 1 or args.max_body < 1024:
        p.error("--cache-size and --concurrency must be >= 1, --max-body >= 1024")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1 (or left out for the default), got {args.threads}")
    torch.set_num_threads(args.threads or cpu_threads(args.concurrency))
    allowed = [m for m in args.models.split(",") if m.strip()]
    loader = functools.partial(assd.load, compile=True) if args.compile else assd.load
    cache = ModelCache(
        args.cache_size,
        loader=loader,
        allowed=allowed,
        allow_any=args.allow_any_model,
        calibrate=True,  # "fastest ASSD" measured in the background as each model loads
    )
    name, revision = parse_spec(args.model)
    revision = args.revision or revision
    blocks = build(name, revision, cache)
    if not args.no_preload:
        try:  # the first visitor should not wait for the load; a failure shows on the page
            lm = cache.get(name, revision)
        except DemoError as e:
            print(f"warning: {e}")
        else:  # nor share the cores with the calibration of "fastest ASSD": finish it first
            print(f"{args.model}: measuring the fastest ASSD form (about a minute on 2 cores)")
            cache.calibration(lm.model).join()
    launch(
        blocks,
        args.concurrency,
        max_body=args.max_body,
        server_name=args.host,
        server_port=args.port,
        share=args.share,
    )


if __name__ == "__main__":
    main()
