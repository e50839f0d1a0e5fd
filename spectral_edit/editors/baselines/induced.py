"""ICD's factually weak model (Zhang et al. 2023, arXiv:2312.15710): LoRA adapters trained
on the demonstrations' *negative* answers, to be contrasted with the model at scoring
(:class:`~spectral_edit.evaluate.contrast.ContrastReadout`).

The training is :meth:`~.lora.LoRAEditor.train` unchanged — the same trainer, budget and
loss (answer tokens only) — on the demonstrations with their answers swapped, so the
"positive" target it fits is each negative answer. The result is a :class:`~.lora.LoRAEditor`
(one file format, hooks at inference, the model itself never modified); its metadata
records ``"answers": "negative"``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from ...demos.format import Demonstration
from .lora import LoRAEditor


def negatives_as_targets(demos: Sequence[Demonstration]) -> list[Demonstration]:
    """The demonstrations with positive and negative answers swapped."""
    return [dataclasses.replace(d, positive=d.negative, negative=d.positive) for d in demos]


def train_induced(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    demos: Sequence[Demonstration],
    **train: Any,
) -> LoRAEditor:
    """LoRA adapters fine-tuned on the negative answers of ``demos`` given their prompts
    (``train``: :meth:`~.lora.LoRAEditor.train`'s keyword arguments: rank, steps, lr,
    batch size, seed, prompt format, ...); ``model`` is left unchanged."""
    editor = LoRAEditor.train(model, tokenizer, negatives_as_targets(demos), **train)
    return dataclasses.replace(editor, metadata={**editor.metadata, "answers": "negative"})
