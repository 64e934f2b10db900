"""Command line: ``python -m assd "The old lighthouse [MASK:12] over the harbour." --model prose``.

Prints the completed text on standard output and its statistics on standard error (``--json``:
one JSON object on standard output instead). ``-`` reads the text from standard input.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from .infill import SAMPLERS, infill
from .text import HELP


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m assd",
        description=f"Fill in masked text with an any-subset autoregressive model. Markup: {HELP}.",
    )
    p.add_argument("text", help="the text with mask markup, or - to read it from standard input")
    p.add_argument("--model", default="prose", help="prose, code, a directory or a Hub id")
    p.add_argument("--revision", default=None, help="Hub revision of --model (e.g. nlp)")
    p.add_argument("--sampler", default="fastest", choices=SAMPLERS, help="default: fastest")
    p.add_argument("-k", type=int, default=None, help="proposals per round (assd, one-call)")
    p.add_argument("--temperature", type=float, default=None, help="default 1.0")
    p.add_argument("--order", default="left-to-right", choices=("left-to-right", "random"))
    p.add_argument("--seed", type=int, default=None, help="for reproducible draws")
    p.add_argument("--json", action="store_true", help="print text and statistics as JSON")
    args = p.parse_args(argv)
    text = sys.stdin.read() if args.text == "-" else args.text
    try:  # keep standard error for the statistics
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        out = infill(
            text,
            args.model,
            sampler=args.sampler,
            k=args.k,
            temperature=args.temperature,
            order=args.order,
            seed=args.seed,
            revision=args.revision,
        )
    except (ValueError, TypeError) as e:
        p.exit(2, f"python -m assd: error: {e}\n")
    if args.json:
        print(json.dumps(dict(asdict(out), tokens_per_call=out.tokens_per_call), indent=2))
        return 0
    sys.stdout.write(out.text if out.text.endswith("\n") else out.text + "\n")
    sys.stdout.flush()
    sys.stderr.write(
        f"[{out.sampler}] {out.tokens} tokens, {out.calls} network calls "
        f"({out.tokens_per_call:.2f} tokens per call), {out.rounds} rounds, "
        f"log-likelihood {out.log_likelihood:.2f} nats\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
