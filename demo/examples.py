"""Ready-made inputs: (text, masking mode, random rate %). ``[HIDE]`` keeps token counts right
for any tokenizer and shows the original next to the model's fill."""

PROSE = [
    ["The cat sat on the [HIDE]mat. The dog[/HIDE] sat on the log.", "markup", 50],
    [
        "Maria had never seen the sea. [MASK:24] When she finally reached the shore, she took "
        "off her shoes and ran into the cold waves, laughing.",
        "markup",
        50,
    ],
    [
        "The old lighthouse keeper climbed the [HIDE]hundred and twelve[/HIDE] stairs every "
        "evening. [HIDE]He trimmed the wick, polished the great lens and[/HIDE] watched the "
        "fishing boats come home before dark.",
        "markup",
        50,
    ],
    [
        "Once upon a time, a little fox lived at the edge of a great forest. Every morning she ran "
        "down to the river to drink, and every evening she climbed the hill to watch the sun go "
        "down behind the mountains.",
        "random",
        50,
    ],
]

CODE = [
    [
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
        "markup",
        50,
    ],
    [
        "def add(a, b):\n    return [HIDE]a + b[/HIDE]\n",
        "markup",
        50,
    ],
    [
        "def fibonacci(n: int) -> int:\n"
        '    """Return the n-th Fibonacci number."""\n'
        "    if n < 2:\n"
        "        return n\n"
        "    [MASK:16]\n",
        "markup",
        50,
    ],
    [
        "def mean(xs):\n"
        "    total = 0\n"
        "    for x in xs:\n"
        "        total += x\n"
        "    return total / len(xs)\n",
        "random",
        30,
    ],
]
