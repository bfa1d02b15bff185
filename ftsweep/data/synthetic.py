"""The built-in instruction dataset: deterministic, generated, nothing downloaded.

Three small tasks whose answers follow from the input, so a model can learn them
and exact match means something: pull a field out of a record, reverse a word,
add two numbers. Records are alpaca-shaped (instruction, input, output).
"""

from __future__ import annotations

import random

VERSION = 2  # bump when generate() makes other records for the same arguments (the tokenized cache keys on it)

_NAMES = ["Ada", "Lin", "Omar", "Mei", "Ravi", "Sofia", "Kenji", "Zoe", "Ivan", "Nia", "Tomas", "Yara"]
_CITIES = ["Oslo", "Lima", "Pune", "Kyiv", "Baku", "Rome", "Doha", "Riga", "Nice", "Hue", "Cork", "Bern"]


def _extract(rng: random.Random) -> dict:
    name, city, age = rng.choice(_NAMES), rng.choice(_CITIES), rng.randint(18, 90)
    field = rng.choice(["name", "city", "age"])
    answer = {"name": name, "city": city, "age": str(age)}[field]
    return {"instruction": f"Extract the {field}.", "input": f"name={name}; city={city}; age={age}", "output": f"The {field} is {answer}."}


def _reverse(rng: random.Random) -> dict:
    # Made-up words of two or three syllables (80^2 + 80^3 of them): with twelve real words every held-out reversal
    # was also a training record, and its held-out loss measured recall.
    word = "".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(2, 3)))
    return {"instruction": "Reverse the word.", "input": word, "output": f"Reversed, {word} is {word[::-1]}."}


def _add(rng: random.Random) -> dict:
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    return {"instruction": "Add the numbers.", "input": f"{a} + {b}", "output": f"{a} plus {b} is {a + b}."}


TASKS = {"extract": _extract, "reverse": _reverse, "add": _add}


def generate(num_records: int, tasks: list[str], seed: int = 1234) -> list[dict]:
    """num_records distinct records cycling through tasks; the same arguments give the same list.

    Distinct, so that no record can be on both sides of the held-out split: a draw that repeats an earlier record
    is drawn again (19 of the default 64 held-out records were training records too).
    """
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"data.synthetic_tasks: unknown task(s) {unknown}; choose from {sorted(TASKS)}")
    rng, seen, records = random.Random(seed), set(), []
    for i in range(num_records):
        for _ in range(1000):  # the tasks hold about 10,000 (add) to 500,000 records: a repeat is rare
            record = TASKS[tasks[i % len(tasks)]](rng)
            if (key := tuple(record.values())) not in seen:
                break
        else:
            raise ValueError(f"data.num_records={num_records}: more than the synthetic tasks {tasks} can make distinct")
        seen.add(key)
        records.append(record)
    return records
