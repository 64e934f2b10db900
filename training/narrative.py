"""Select narrative passages from a Wikipedia dump: the training data of a story-style fine-tune.

Stories (ROCStories, the demo's prose prompts) are told in the past tense about people: "he",
"she", "they". Encyclopedic text rarely is, so a model trained on all of Wikipedia writes
encyclopedia sentences where a story goes on. This keeps only paragraphs that read like
narration: every paragraph of a plot or synopsis section, and any other paragraph of at least
``min_words`` words in which personal pronouns make up at least ``min_pronoun_rate`` of the words
(the median rate of plot-section paragraphs is about 0.06; of all paragraphs, below 0.02). The
selection reads training files only, so nothing of an evaluation set leaks into it.

    python -m training.narrative ../shared/data/text/wiki_train_full_0?.jsonl.xz --out narr.jsonl.xz
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import re
from collections.abc import Iterable, Iterator

from .data import _open

PRONOUNS = frozenset("he she his her him they them their i my me we our".split())
STORY_HEADINGS = frozenset(
    {"plot", "synopsis", "plot summary", "story", "storyline", "premise", "narrative"}
)
_WORD = re.compile(r"[a-z']+")


def pronoun_rate(paragraph: str) -> tuple[float, int]:
    """(share of words that are personal pronouns, number of words)."""
    words = _WORD.findall(paragraph.lower())
    if not words:
        return 0.0, 0
    return sum(w in PRONOUNS for w in words) / len(words), len(words)


def narrative_passages(
    text: str, min_pronoun_rate: float = 0.05, min_words: int = 30
) -> Iterator[str]:
    """The narrative runs of one article: consecutive kept paragraphs joined by newlines.

    Sections are separated by a blank line and start with their heading line (the dump's
    format); the article's lead has no heading. A run goes on across a section break when both
    sides are kept (the heading is not part of it): the shipped fine-tune's data was made so.
    "I" counts as a pronoun, Roman numerals too ("World War I"): rare enough not to matter.
    """
    run: list[str] = []
    for i, section in enumerate(text.split("\n\n")):
        heading, _, body = section.partition("\n")
        story = i > 0 and heading.strip().lower() in STORY_HEADINGS
        paragraphs = body.split("\n") if i > 0 else section.split("\n")
        for p in paragraphs:
            rate, n = pronoun_rate(p)
            if (story and n >= 10) or (n >= min_words and rate >= min_pronoun_rate):
                run.append(p.strip())
            elif run:
                yield "\n".join(run)
                run = []
    if run:
        yield "\n".join(run)


def select(paths: Iterable[str], **kw) -> Iterator[dict]:
    for path in paths:
        with _open(path) as f:
            for line in f:
                doc = json.loads(line)
                for j, passage in enumerate(narrative_passages(doc["text"], **kw)):
                    yield {"title": f"{doc['title']} #{j}", "text": passage}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="Wikipedia JSON lines files ({title, text} per line)")
    ap.add_argument("--out", required=True, help="output .jsonl or .jsonl.xz")
    ap.add_argument("--min-pronoun-rate", type=float, default=0.05)
    ap.add_argument("--min-words", type=int, default=30)
    a = ap.parse_args(argv)
    opener = lzma.open if a.out.endswith(".xz") else open
    n = chars = 0
    tmp = a.out + ".tmp"
    with opener(tmp, "wt", encoding="utf-8") as f:
        for d in select(a.paths, min_pronoun_rate=a.min_pronoun_rate, min_words=a.min_words):
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
            n += 1
            chars += len(d["text"])
    os.replace(tmp, a.out)
    print(f"{n} passages, {chars:,} characters -> {a.out}")


if __name__ == "__main__":
    main()
