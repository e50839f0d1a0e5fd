"""The activations SEA is fitted on: for every demonstration, its neutral, positive and
negative answer appended to its prompt, read at chosen layers.

Neutral answers (:class:`~spectral_edit.core.options.Neutral`): ``generate``, the model's
own greedy answer (the paper); ``prompt``, the prompt's last token (empty answer);
``given``, the file's ``neutral`` field (required on every demonstration).

Under a chat template (``prompt_format``) every prompt is first adopted into the template
(:meth:`~.prompts.PromptFormat.adopt`: kept if already rendered, else the user turn) and
the answers follow the generation prompt without a space (:meth:`~.prompts.PromptFormat.answer`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..core.options import Neutral, Site, Token
from ..hf.capture import capture_kinds
from ..hf.generated_capture import GENERATED, capture_generated
from ..hf.generation import generate_greedy
from .format import Demonstration
from .prompts import PLAIN, PromptFormat

GENERATION_WIDTH = 16
"""Neutral answers decode ``GENERATION_WIDTH × batch_size`` demonstrations together (each
step reads the weights once, whatever the rows; the KV cache grows with them)."""


def neutral_answers(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    demos: Sequence[Demonstration],
    neutral: Neutral | str = Neutral.GENERATE,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 64,
    progress: bool = False,
    prompt_format: PromptFormat = PLAIN,
) -> list[str]:
    """The neutral continuation of each demonstration (``""`` = the prompt's last token),
    in ``prompt_format`` (the prompts as given: adopt them first); a ``neutral`` field,
    where present, wins over generation.

    Raises:
        ValueError: an unknown ``neutral``, or ``"given"`` with a demonstration that has
            no ``neutral`` field.
    """
    mode = Neutral.parse(neutral, "neutral")
    if mode is Neutral.PROMPT:
        return [""] * len(demos)
    if mode is Neutral.GIVEN:
        missing = [i + 1 for i, d in enumerate(demos) if d.neutral is None]
        if missing:
            raise ValueError(f"neutral='given' but demonstrations {missing[:10]} have no neutral")
        given = [d.neutral or "" for d in demos]
        return [prompt_format.answer(a) if a.strip() else "" for a in given]
    todo = [i for i, d in enumerate(demos) if d.neutral is None]
    generated = generate_greedy(
        model,
        tokenizer,
        [demos[i].prompt for i in todo],
        batch_size=batch_size,
        decode_batch_size=GENERATION_WIDTH * batch_size,
        max_new_tokens=max_new_tokens,
        progress="neutral answers" if progress else False,
    )
    answers = [d.neutral or "" for d in demos]
    for i, text in zip(todo, generated, strict=True):
        answers[i] = text
    return [prompt_format.answer(a) if a.strip() else "" for a in answers]


@dataclass(frozen=True)
class DemoActivations:
    """Activations of N demonstrations at L layers: three ``(N, L, d)`` float32 tensors;
    ``layers[j]`` is the model layer of index ``j`` along the second axis."""

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
    neutral: Neutral | str = Neutral.GENERATE,
    site: Site | str = Site.RESIDUAL,
    token: Token | str = Token.LAST,
    token_seed: int = 0,
    batch_size: int = 8,
    layer_path: str | None = None,
    progress: bool = False,
    prompt_format: PromptFormat = PLAIN,
) -> DemoActivations:
    """Neutral, positive and negative activations of the demonstrations at ``site`` of
    ``layers``, at the answer's last token or averaged over it (``token``), with prompts
    and answers in ``prompt_format`` (module docstring); ``token="random"`` reads one
    answer token drawn from ``token_seed``.

    Raises:
        ValueError: an unknown ``neutral``, ``site`` or ``token`` (checked before any
            forward pass).
    """
    site, token = Site.parse(site, "site"), Token.parse(token, "token")
    demos = [dataclasses.replace(d, prompt=prompt_format.adopt(d.prompt)) for d in demos]
    prompts = [d.prompt for d in demos]
    given = {
        "positive": [prompt_format.answer(d.positive) for d in demos],
        "negative": [prompt_format.answer(d.negative) for d in demos],
    }
    common: dict[str, Any] = {
        "layers": layers,
        "site": site,
        "token": token,
        "token_seed": token_seed,
        "batch_size": batch_size,
        "layer_path": layer_path,
    }
    mode = Neutral.parse(neutral, "neutral")
    if mode is Neutral.GENERATE and all(d.neutral is None for d in demos):
        # one pass over each prompt: the answers are read while they are generated
        _, captured = capture_generated(
            model,
            tokenizer,
            prompts,
            given,
            answer=lambda text: prompt_format.answer(text) if text.strip() else "",
            decode_batch_size=GENERATION_WIDTH * batch_size,
            progress="neutral answers + activations" if progress else False,
            **common,
        )
        captured["neutral"] = captured.pop(GENERATED)
    else:
        neutral_texts = neutral_answers(
            model,
            tokenizer,
            demos,
            mode,
            batch_size=batch_size,
            progress=progress,
            prompt_format=prompt_format,
        )
        captured = capture_kinds(
            model,
            tokenizer,
            prompts,
            {"neutral": neutral_texts, **given},
            progress="activations" if progress else False,
            **common,
        )
    return DemoActivations(
        neutral=captured["neutral"],
        positive=captured["positive"],
        negative=captured["negative"],
        layers=tuple(layers),
    )
