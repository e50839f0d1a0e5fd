"""LoRA training: the supervised fine-tuning behind :meth:`~.lora.LoRAEditor.train`.

Low-rank adapters are trained with ``peft`` (the ``baselines`` extra, imported when
training starts) on a float32 deep copy of the model, by supervised learning on the
demonstrations' positive answers: each example is ``prompt + answer_text(positive)``
tokenised with :func:`~spectral_edit.hf.tokens.encode_pair` (as answers are scored), and
only the answer tokens carry a loss (prompt and padding labels are :data:`IGNORE_INDEX`).
Shapes: a batch is ``(B, T)`` token ids, mask, positions and labels; logits ``(B, T, V)``.
The user's model is never modified (checked after training).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase
from transformers.pytorch_utils import Conv1D

from ...demos.format import Demonstration
from ...demos.prompts import PLAIN, PromptFormat
from ...hf.heads import decoder_and_head, lm_head_logits
from ...hf.layers import find_decoder_layers, linear_dims, parse_layers
from ...hf.tokens import encode_pair, input_device, model_inputs, pad_batch, pad_id_of
from ...util.extras import require
from ...util.progress import progress_bar

if TYPE_CHECKING:
    from peft import PeftModel

IGNORE_INDEX = -100
"""Label of tokens that carry no loss (prompt and padding), as in ``F.cross_entropy``."""

DEFAULT_TARGET_GROUPS: tuple[tuple[str, ...], ...] = (
    ("q_proj", "v_proj"),  # Llama, Mistral, Gemma, Qwen, OPT, GPT-J, ...
    ("c_attn",),  # GPT-2 (fused q, k, v Conv1D)
    ("query_key_value",),  # GPT-NeoX, Falcon, Bloom (fused)
    ("qkv_proj",),  # Phi-3 (fused)
    ("Wqkv",),  # MPT (fused)
    ("query", "value"),  # BERT-style naming
)
"""Attention query/value projections, by module name, in order of preference; the first
group whose names all occur in the first decoder layer is the default."""


# --- target modules ---------------------------------------------------------------------


def _is_linear(module: nn.Module) -> bool:
    return linear_dims(module) is not None


def _matches(name: str, target: str) -> bool:
    """peft's rule: a target names a module by its full name or a dotted suffix of it."""
    return name == target or name.endswith("." + target)


def default_targets(model: nn.Module, layer_path: str | None = None) -> tuple[str, ...]:
    """The attention query/value projection names of ``model`` (see
    :data:`DEFAULT_TARGET_GROUPS`), read from its first decoder layer."""
    block = find_decoder_layers(model, layer_path)[0]
    present = {name.rsplit(".", 1)[-1] for name, m in block.named_modules() if _is_linear(m)}
    for group in DEFAULT_TARGET_GROUPS:
        if set(group) <= present:
            return group
    raise ValueError(
        f"cannot find the attention query/value projections of {type(block).__name__} "
        f"(its linear layers are {sorted(present)}); pass targets=[...] explicitly"
    )


def _name_of(model: nn.Module, module: nn.Module) -> str:
    for name, candidate in model.named_modules():
        if candidate is module:
            return name
    raise LookupError(f"{type(module).__name__} is not a submodule of {type(model).__name__}")


def lora_target_modules(
    model: nn.Module,
    *,
    targets: Sequence[str] | None = None,
    layers: str | int | Sequence[int] | None = None,
    layer_path: str | None = None,
) -> list[str]:
    """Dotted names (in ``model``) of the linear layers to adapt.

    Args:
        targets: module names or dotted suffixes inside a decoder layer (e.g. ``"q_proj"``,
            ``"self_attn.v_proj"``); ``None`` = :func:`default_targets`.
        layers: decoder layers to adapt (any :func:`~spectral_edit.hf.layers.parse_layers`
            spec); ``None`` = all.

    Every target must match a linear layer in every selected decoder layer.
    """
    blocks = find_decoder_layers(model, layer_path)
    prefix = _name_of(model, blocks)
    chosen = tuple(targets) if targets is not None else default_targets(model, layer_path)
    if not chosen:
        raise ValueError("targets must name at least one module")
    names: list[str] = []
    for index in parse_layers(layers, len(blocks)):
        for target in chosen:
            found = [
                sub
                for sub, module in blocks[index].named_modules()
                if sub and _matches(sub, target) and _is_linear(module)
            ]
            if not found:
                raise ValueError(
                    f"target {target!r} matches no linear layer in decoder layer {index}"
                )
            names.extend(".".join(p for p in (prefix, str(index), sub) if p) for sub in found)
    return list(dict.fromkeys(names))


# --- training data and loss ---------------------------------------------------------------


def answer_example(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    answer: str,
    prompt_format: PromptFormat = PLAIN,
) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of ``prompt`` and ``answer`` in ``prompt_format`` (the
    prompt adopted into it, then the answer's continuation: for plain prompts
    ``prompt + answer_text(answer)``), both of length T.

    Tokenised with :func:`~spectral_edit.hf.tokens.encode_pair` (the scoring rule); labels
    are ``IGNORE_INDEX`` on the prompt's tokens and the token ids on the answer's.
    """
    prompt = prompt_format.adopt(prompt)
    context, continuation = encode_pair(tokenizer, prompt, prompt_format.answer(answer))
    if not continuation:
        raise ValueError(f"answer {answer!r} adds no tokens to prompt {prompt!r}")
    return context + continuation, [IGNORE_INDEX] * len(context) + continuation


def collate_examples(
    examples: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad examples into ``(input_ids, attention_mask, position_ids, labels)``, each
    ``(B, T)`` long; padding positions have label ``IGNORE_INDEX``."""
    ids, mask, positions = pad_batch([ids for ids, _ in examples], pad_id, side="right")
    labels = torch.full_like(ids, IGNORE_INDEX)
    for row, (_, example_labels) in enumerate(examples):
        labels[row, : len(example_labels)] = torch.as_tensor(list(example_labels))
    return ids, mask, positions, labels


def masked_lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Next-token cross-entropy of ``(B, T, V)`` logits against ``(B, T)`` labels.

    Position ``t`` predicts label ``t + 1``; labels equal to ``IGNORE_INDEX`` contribute
    nothing (not to the sum, not to the count). ``reduction``: ``"mean"`` over the
    counted tokens or ``"sum"``.
    """
    shifted = logits[:, :-1].float()
    targets = labels[:, 1:].to(shifted.device)
    return F.cross_entropy(
        shifted.reshape(-1, shifted.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction=reduction,
    )


def _forward_loss(
    model: nn.Module, batch: tuple[torch.Tensor, ...], reduction: str = "mean"
) -> torch.Tensor:
    """:func:`masked_lm_loss` of the batch, with the LM head applied only at the positions
    that predict answer tokens (the head dominates the cost with large vocabularies)."""
    ids, mask, positions, labels = batch
    base, _ = decoder_and_head(model)
    hidden = base(**model_inputs(model, ids, mask, positions), use_cache=False).last_hidden_state
    targets = labels[:, 1:].to(hidden.device)
    keep = targets != IGNORE_INDEX
    logits = lm_head_logits(model, hidden[:, :-1][keep])
    return F.cross_entropy(logits, targets[keep], reduction=reduction)


@torch.no_grad()
def positive_answer_loss(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    demos: Sequence[Demonstration],
    *,
    batch_size: int = 8,
    prompt_format: PromptFormat = PLAIN,
) -> float:
    """Mean per-token negative log-likelihood of the demonstrations' positive answers
    given their prompts (the quantity :meth:`LoRAEditor.train` minimises)."""
    examples = [answer_example(tokenizer, d.prompt, d.positive, prompt_format) for d in demos]
    pad_id = pad_id_of(tokenizer)
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = collate_examples(examples[start : start + batch_size], pad_id)
        total += float(_forward_loss(model, batch, reduction="sum"))
        count += int((batch[3][:, 1:] != IGNORE_INDEX).sum())
    return total / count


def _minibatches(n: int, batch_size: int, steps: int, seed: int) -> Iterator[list[int]]:
    """``steps`` minibatches of example indices: seeded reshuffles of ``range(n)``, cut
    into chunks of ``batch_size`` (an epoch's last chunk may be smaller)."""
    generator = torch.Generator().manual_seed(seed)
    produced = 0
    while True:
        order = torch.randperm(n, generator=generator).tolist()
        for start in range(0, n, batch_size):
            if produced == steps:
                return
            produced += 1
            yield order[start : start + batch_size]


# --- training ---------------------------------------------------------------------------


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's RNG (for peft's adapter initialisation) and restore it afterwards."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _parameter_state(model: nn.Module) -> dict[str, tuple[int, int, bool]]:
    """Per parameter: identity, in-place version counter, ``requires_grad``."""
    return {
        name: (id(param), param._version, param.requires_grad)
        for name, param in model.named_parameters()
    }


def _check_disjoint(original: nn.Module, trained: nn.Module) -> None:
    storage = {p.data_ptr() for p in original.parameters() if p.numel()}
    if any(p.numel() and p.data_ptr() in storage for p in trained.parameters()):
        raise RuntimeError("the training copy shares parameter storage with the user's model")


def train_lora_copy(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    demos: Sequence[Demonstration],
    modules: Sequence[str],
    *,
    rank: int = 8,
    lora_alpha: float = 16,
    steps: int = 100,
    lr: float = 1e-4,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool | str = False,
    prompt_format: PromptFormat = PLAIN,
) -> tuple[PeftModel, list[float]]:
    """Fine-tune LoRA adapters on ``modules`` of a float32 deep copy of ``model``.

    AdamW for ``steps`` optimizer steps over seeded shuffled minibatches of the positive
    answers (loss on answer tokens only); the copy stays in eval mode (no dropout) so
    training is deterministic given ``seed``. ``model`` itself is not modified (checked).
    ``prompt_format``: the demonstrations' prompts and answers as the scorer sees them
    (plain, or a chat template: :func:`answer_example`).

    Returns the trained ``peft`` model (wrapping the copy) and the per-step losses.
    """
    peft = require("peft", "baselines", "LoRA training")
    if not demos:
        raise ValueError("LoRA training needs at least one demonstration")
    if steps < 1 or batch_size < 1 or rank < 1:
        raise ValueError("steps, batch_size and rank must be positive")
    examples = [answer_example(tokenizer, d.prompt, d.positive, prompt_format) for d in demos]
    pad_id = pad_id_of(tokenizer)
    before, was_training = _parameter_state(model), model.training

    trained = copy.deepcopy(model).to(torch.float32).eval()
    _check_disjoint(model, trained)
    conv1d = all(isinstance(trained.get_submodule(name), Conv1D) for name in modules)
    config = peft.LoraConfig(
        r=rank,
        lora_alpha=lora_alpha,
        lora_dropout=0.0,
        target_modules=list(modules),
        fan_in_fan_out=conv1d,
        bias="none",
    )
    with _seeded(seed, input_device(trained)), warnings.catch_warnings():
        # peft 0.21 calls a transformers API deprecated in transformers 5 (harmless).
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
        peft_model = peft.get_peft_model(trained, config)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    losses: list[float] = []
    with progress_bar(steps, progress, "LoRA training", "step") as bar:
        for indices in _minibatches(len(examples), batch_size, steps, seed):
            batch = collate_examples([examples[i] for i in indices], pad_id)
            loss = _forward_loss(trained, batch)  # the copy, with the adapters injected
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            bar.update()
    peft_model.eval()

    if _parameter_state(model) != before or model.training != was_training:
        raise RuntimeError("LoRA training modified the user's model; this is a bug")
    return peft_model, losses
