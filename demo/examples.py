"""Ready-made inputs. ``[HIDE]`` keeps token counts right for any tokenizer and shows the
original next to the model's fill. The first one is in the input box when the page opens."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    label: str
    text: str
    model: str = "prose"  # the embedded model it is written for
    mode: str = "markup"  # or "random": mask a random `rate` % of the tokens
    rate: int = 50


EXAMPLES = [
    Example(
        "Maria and the sea",
        "Maria had never seen the sea. [HIDE]Her village lay far inland, among wheat fields, and "
        "the only water she knew was the slow brown river.[/HIDE] When she finally reached the "
        "shore, she took off her shoes and ran into the cold waves, laughing.",
    ),
    Example(
        "Lighthouse keeper",
        "The old lighthouse keeper lived alone on the island. [MASK:40] Every evening he climbed "
        "the stairs, lit the great lamp and watched the fishing boats come home before dark.",
    ),
    Example("The cat sat", "The cat sat on the [HIDE]mat. The dog[/HIDE] sat on the log."),
    Example(
        "Fox, 50% random",
        "Once upon a time, a little fox lived at the edge of a great forest. Every morning she ran "
        "down to the river to drink, and every evening she climbed the hill to watch the sun go "
        "down behind the mountains.",
        mode="random",
    ),
    Example(
        "HumanEval line",
        "from typing import List\n\n\n"
        "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
        '    """Check if in given list of numbers, are any two numbers closer to each other than\n'
        "    given threshold.\n"
        "    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)\n"
        "    False\n"
        '    """\n'
        "    for idx, elem in enumerate(numbers):\n"
        "        for idx2, elem2 in enumerate(numbers):\n"
        "            if idx != idx2:\n"
        "                [HIDE]distance = abs(elem - elem2)[/HIDE]\n"
        "                if distance < threshold:\n"
        "                    return True\n\n"
        "    return False\n",
        model="code",
    ),
    Example("add(a, b)", "def add(a, b):\n    return [HIDE]a + b[/HIDE]\n", model="code"),
    Example(
        "Fibonacci body",
        "def fibonacci(n: int) -> int:\n"
        '    """Return the n-th Fibonacci number."""\n'
        "    if n < 2:\n"
        "        return n\n"
        "    [MASK:16]\n",
        model="code",
    ),
    Example(
        "mean(), 30% random",
        "def mean(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total / len(xs)\n",
        model="code",
        mode="random",
        rate=30,
    ),
    Example("Non-ASCII", "Café au lait: [HIDE]un café[/HIDE] avec du lait chaud, 3 € à Paris."),
]
DEFAULT = EXAMPLES[0]
