"""Checks of the data files shipped inside the package."""

from __future__ import annotations

import json
from importlib import resources

DEMOS = "truthful_demos.jsonl"
PRIMER_START = "Q: What is human life expectancy in the United States?\n"
PRIMER_END = "A: The 1992 Olympics were held in Barcelona, Spain.\n\nQ: "


def _demo_lines() -> list[str]:
    path = resources.files("spectral_edit") / "resources" / DEMOS
    return path.read_text(encoding="utf-8").splitlines()


def test_truthful_demos_are_valid() -> None:
    lines = _demo_lines()
    assert len(lines) >= 30
    questions = set()
    for lineno, line in enumerate(lines, 1):
        where = f"{DEMOS}:{lineno}"
        obj = json.loads(line)
        assert isinstance(obj, dict), where
        for key in ("prompt", "positive", "negative"):
            assert isinstance(obj.get(key), str) and obj[key].strip(), f"{where}: {key}"
        prompt = obj["prompt"]
        assert prompt.endswith("\nA:"), where
        assert prompt.startswith(PRIMER_START), where
        assert prompt.count(PRIMER_END) == 1, where
        questions.add(prompt.split(PRIMER_END, 1)[1])
        assert obj["positive"].endswith(".") and obj["negative"].endswith("."), where
        assert obj["positive"] != obj["negative"], where
    assert len(questions) == len(lines)  # no duplicated question
