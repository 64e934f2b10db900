"""training.narrative: which Wikipedia paragraphs a story-style fine-tune keeps."""

from __future__ import annotations

import json
import lzma

from training import narrative

STORY = "He went home and she told him that they had lost their keys in the park. " * 3
FACTS = "The river is 120 km long and flows through three provinces of the country. " * 3


def test_keeps_narration_and_story_sections_drops_facts():
    text = "\n\n".join(
        [
            f"Title lead\n{FACTS}",
            f"History\n{FACTS}\n{STORY}\n{STORY}\n{FACTS}",
            "Plot\nThe ship sinks near the coast during a storm at night.",  # short, but a plot
        ]
    )
    got = list(narrative.narrative_passages(text))
    assert got == [
        f"{STORY.strip()}\n{STORY.strip()}",
        "The ship sinks near the coast during a storm at night.",
    ]
    assert list(narrative.narrative_passages(f"Lead\n{FACTS}")) == []


def test_pronoun_rate_counts_words():
    assert narrative.pronoun_rate("") == (0.0, 0)
    assert narrative.pronoun_rate("She saw him.") == (2 / 3, 3)


def test_cli_writes_jsonl_xz_atomically(tmp_path):
    src = tmp_path / "wiki.jsonl"
    src.write_text(json.dumps({"title": "A", "text": f"Lead\n{STORY}"}) + "\n")
    out = tmp_path / "narr.jsonl.xz"
    narrative.main([str(src), "--out", str(out)])
    rows = [json.loads(x) for x in lzma.open(out, "rt")]
    assert rows == [{"title": "A #0", "text": STORY.strip()}]
    assert not (tmp_path / "narr.jsonl.xz.tmp").exists()
