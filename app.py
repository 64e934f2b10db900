"""ASSD demo: ``python app.py [--model prose|code|DIR|HUB_ID] [--revision REV] [--port N]``.

The app itself lives in ``demo/`` (testable without a browser); this file only parses flags.
On a Hugging Face Space it runs with the defaults (embedded prose model, CPU).
"""

from __future__ import annotations

import argparse
import os

from demo.models import ModelCache
from demo.ui import build, launch


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default=os.environ.get("ASSD_MODEL", "prose"),
                   help="default model: 'prose', 'code', a local directory or a Hub id (env ASSD_MODEL)")  # fmt: skip
    p.add_argument("--revision", default=os.environ.get("ASSD_REVISION") or None,
                   help="Hub revision of --model, e.g. nlp or code (env ASSD_REVISION)")  # fmt: skip
    p.add_argument("--host", default=None, help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 7860 or the next free)")
    p.add_argument("--share", action="store_true", help="also create a public gradio.live link")
    p.add_argument("--cache-size", type=int, default=2, help="models kept loaded at once")
    p.add_argument("--concurrency", type=int, default=2, help="runs served at the same time")
    args = p.parse_args(argv)
    if args.cache_size < 1 or args.concurrency < 1:
        p.error("--cache-size and --concurrency must be >= 1")
    blocks = build(args.model, args.revision, ModelCache(args.cache_size))
    launch(blocks, args.concurrency, server_name=args.host, server_port=args.port, share=args.share)


if __name__ == "__main__":
    main()
