"""Demonstrations: a JSON Lines file of (prompt, positive, negative[, neutral]) records,
and the activations SEA is fitted on."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..hf.capture import capture
from ..hf.generation import generate_greedy
from ..util.atomic import atomic_write_text
from .prompts import answer_text

NEUTRAL_CHOICES = ("generate", "prompt", "given")
"""``generate``: the model's own greedy answer (paper); ``prompt``: the last prompt token;
``given``: the file's ``neutral`` field (required on every line)."""


class DemoFormatError(ValueError):
    """A demonstrations file has a malformed line (the message names file and line)."""


@dataclass(frozen=True)
class Demonstration:
    """One demonstration; answers are appended to the prompt after a single space."""

    prompt: str
    positive: str
    negative: str
    neutral: str | None = None


def read_demos(path: str | Path) -> list[Demonstration]:
    """Parse a demonstrations file; blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DemoFormatError(f"{path}: no such demonstrations file")
    demos = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DemoFormatError(f"{path}:{number}: invalid JSON ({error.msg})") from None
            demos.append(_parse_record(record, f"{path}:{number}"))
    if not demos:
        raise DemoFormatError(f"{path}: no demonstrations in the file")
    return demos


def _parse_record(record: object, where: str) -> Demonstration:
    if not isinstance(record, dict):
        raise DemoFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    values = {}
    for field in ("prompt", "positive", "negative"):
        value = record.get(field)
        if not isinstance(value, str) or not value.strip():
            raise DemoFormatError(f"{where}: field {field!r} must be a non-empty string")
        values[field] = value
    neutral = record.get("neutral")
    if neutral is not None and not isinstance(neutral, str):
        raise DemoFormatError(f"{where}: field 'neutral' must be a string when present")
    unknown = set(record) - {"prompt", "positive", "negative", "neutral"}
    if unknown:
        raise DemoFormatError(f"{where}: unknown fields {sorted(unknown)}")
    return Demonstration(neutral=neutral, **values)


def write_demos(path: str | Path, demos: Iterable[Demonstration]) -> Path:
    """Write demonstrations as JSON Lines, atomically (parent folders are created)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for demo in demos:
        record = {k: v for k, v in asdict(demo).items() if v is not None}
        lines.append(json.dumps(record, ensure_ascii=False))
    atomic_write_text(Path(path), "\n".join(lines) + "\n")
    return Path(path)


def neutral_answers(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    demos: Sequence[Demonstration],
    neutral: str = "generate",
    *,
    batch_size: int = 8,
    max_new_tokens: int = 64,
    progress: bool = False,
) -> list[str]:
    """The neutral continuation of each demonstration ('' = the prompt's last token)."""
    if neutral not in NEUTRAL_CHOICES:
        raise ValueError(f"neutral must be one of {NEUTRAL_CHOICES}, not {neutral!r}")
    if neutral == "prompt":
        return [""] * len(demos)
    if neutral == "given":
        missing = [i + 1 for i, d in enumerate(demos) if d.neutral is None]
        if missing:
            raise ValueError(f"neutral='given' but demonstrations {missing[:10]} have no neutral")
        return [answer_text(d.neutral) if d.neutral.strip() else "" for d in demos]
    todo = [i for i, d in enumerate(demos) if d.neutral is None]
    generated = generate_greedy(
        model,
        tokenizer,
        [demos[i].prompt for i in todo],
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        progress="neutral answers" if progress else False,
    )
    answers = [d.neutral or "" for d in demos]
    for i, text in zip(todo, generated, strict=True):
        answers[i] = text
    return [answer_text(a) if a.strip() else "" for a in answers]


@dataclass(frozen=True)
class DemoActivations:
    """Activations of N demonstrations at L layers: three ``(N, L, d)`` float32 tensors."""

    neutral: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor
    layers: tuple[int, ...]


def capture_demos(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    demos: Sequence[Demonstration],
    *,
    layers: Sequence[int],
    neutral: str = "generate",
    site: str = "residual",
    token: str = "last",
    batch_size: int = 8,
    layer_path: str | None = None,
    progress: bool = False,
) -> DemoActivations:
    """Neutral, positive and negative activations of the demonstrations."""
    prompts = [d.prompt for d in demos]
    neutral_texts = neutral_answers(
        model, tokenizer, demos, neutral, batch_size=batch_size, progress=progress
    )
    options = {
        "layers": layers,
        "site": site,
        "token": token,
        "batch_size": batch_size,
        "layer_path": layer_path,
    }
    answers = {
        "neutral": neutral_texts,
        "positive": [answer_text(d.positive) for d in demos],
        "negative": [answer_text(d.negative) for d in demos],
    }
    captured = {
        kind: capture(
            model,
            tokenizer,
            prompts,
            texts,
            **options,
            progress=f"{kind} activations" if progress else False,
        )
        for kind, texts in answers.items()
    }
    return DemoActivations(**captured, layers=tuple(layers))
