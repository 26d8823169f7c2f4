"""The prompts: one JSON object a line in bench/prompts.jsonl, checked as they are read, and selected by
category and id.

    >>> select_prompts([{"id": "a", "category": "code"}, {"id": "b", "category": "code"}], per_category=1)
    [{'id': 'a', 'category': 'code'}]
"""

from __future__ import annotations

import json
from pathlib import Path

PROMPTS = Path(__file__).resolve().parent / "prompts.jsonl"
CATEGORIES = ("code", "code-edit", "structured", "extraction", "arithmetic", "prose")
FIELDS = ("id", "category", "prompt", "max_new_tokens")


def load_prompts(path=PROMPTS) -> list[dict]:
    """The prompts, one JSON object a line: {"id", "category", "prompt", "max_new_tokens"}. ValueError (naming
    the line) on anything malformed."""
    prompts, seen = [], set()
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}, line {n}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not JSON ({e})") from None
        if not isinstance(record, dict) or sorted(record) != sorted(FIELDS):
            raise ValueError(f"{where}: expected exactly the keys {', '.join(FIELDS)}")
        if record["category"] not in CATEGORIES:
            raise ValueError(f"{where}: unknown category {record['category']!r}: use one of {', '.join(CATEGORIES)}")
        if not isinstance(record["prompt"], str) or not record["prompt"].strip():
            raise ValueError(f"{where}: the prompt must be a non-empty string")
        if not isinstance(record["max_new_tokens"], int) or not 1 <= record["max_new_tokens"] <= 1024:
            raise ValueError(f"{where}: max_new_tokens must be a whole number in 1..1024")
        if record["id"] in seen:
            raise ValueError(f"{where}: duplicate id {record['id']!r}")
        seen.add(record["id"])
        prompts.append(record)
    return prompts


def select_prompts(prompts, categories=None, ids=None, per_category=None) -> list[dict]:
    """The prompts of the given categories / ids, at most `per_category` of each (in file order)."""
    chosen, counts = [], {}
    for p in prompts:
        if categories and p["category"] not in categories:
            continue
        if ids and p["id"] not in ids:
            continue
        if per_category is not None and counts.get(p["category"], 0) >= per_category:
            continue
        counts[p["category"]] = counts.get(p["category"], 0) + 1
        chosen.append(p)
    return chosen
