"""The built-in instruction dataset: deterministic, generated, nothing downloaded.

Three small tasks whose answers follow from the input, so a model can learn them
and exact match means something: pull a field out of a record, reverse a word,
add two numbers. Records are alpaca-shaped (instruction, input, output).
"""

from __future__ import annotations

import random

_NAMES = ["Ada", "Lin", "Omar", "Mei", "Ravi", "Sofia", "Kenji", "Zoe", "Ivan", "Nia", "Tomas", "Yara"]
_CITIES = ["Oslo", "Lima", "Pune", "Kyiv", "Baku", "Rome", "Doha", "Riga", "Nice", "Hue", "Cork", "Bern"]
_WORDS = ["apple", "river", "stone", "cloud", "tiger", "lemon", "piano", "ocean", "maple", "robot", "candle", "garden"]


def _extract(rng: random.Random) -> dict:
    name, city, age = rng.choice(_NAMES), rng.choice(_CITIES), rng.randint(18, 90)
    field = rng.choice(["name", "city", "age"])
    answer = {"name": name, "city": city, "age": str(age)}[field]
    return {"instruction": f"Extract the {field}.", "input": f"name={name}; city={city}; age={age}", "output": f"The {field} is {answer}."}


def _reverse(rng: random.Random) -> dict:
    word = rng.choice(_WORDS)
    return {"instruction": "Reverse the word.", "input": word, "output": f"Reversed, {word} is {word[::-1]}."}


def _add(rng: random.Random) -> dict:
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    return {"instruction": "Add the numbers.", "input": f"{a} + {b}", "output": f"{a} plus {b} is {a + b}."}


TASKS = {"extract": _extract, "reverse": _reverse, "add": _add}


def generate(num_records: int, tasks: list[str], seed: int = 1234) -> list[dict]:
    """num_records records cycling through tasks; the same arguments give the same list."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"data.synthetic_tasks: unknown task(s) {unknown}; choose from {sorted(TASKS)}")
    rng = random.Random(seed)
    return [TASKS[tasks[i % len(tasks)]](rng) for i in range(num_records)]
