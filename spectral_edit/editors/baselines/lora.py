"""LoRA fine-tuning: the training-based reference the inference-time editors compare with.

:meth:`LoRAEditor.train` fine-tunes low-rank adapters (with ``peft``) on a deep copy of the
model, by supervised learning on the demonstrations' positive answers: each example is
``prompt + answer_text(positive)`` tokenised with :func:`~spectral_edit.hf.tokens.encode_pair`
(as answers are scored), and only the answer tokens carry a loss (prompt and padding
labels are ``-100``). The user's model is never modified.

The trained adapters are exported as plain tensors per adapted linear module, keyed by
its dotted name in the original model: ``A`` ``(r, in)``, ``B`` ``(out, r)`` and
``scaling = lora_alpha / r``. At inference no ``peft`` is involved: a forward hook adds
``α · scaling · B A x`` to each module's output (``x @ A.T @ B.T``, so GPT-2's transposed
``Conv1D`` weights need no special case: LoRA acts on the module's input and output, not
on its weight layout). ``α = 0`` is the unedited model, bit for bit; ``α = 1`` computes
exactly what the ``peft`` model computes.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase
from transformers.pytorch_utils import Conv1D

from ...demos.format import Demonstration
from ...demos.prompts import answer_text
from ...hf.heads import decoder_and_head, lm_head_logits
from ...hf.hooks import HookHandle
from ...hf.layers import find_decoder_layers, hidden_size_of, linear_dims, parse_layers
from ...hf.tokens import encode_pair, input_device, model_inputs, pad_batch, pad_id_of
from ...util.progress import progress_bar
from ..base import EditorBase
from ..file_format import EditorFileError, write_editor_file
from .common import (
    EDITOR_KEYS,
    check_alpha,
    check_site,
    editor_fields,
    editor_header,
    load_validated,
)

FORMAT_NAME = "spectral-edit/lora"
FORMAT_VERSION = 1

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
    tokenizer: PreTrainedTokenizerBase, prompt: str, answer: str
) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of ``prompt + answer_text(answer)``, both of length T.

    Tokenised with :func:`~spectral_edit.hf.tokens.encode_pair` (the scoring rule); labels
    are ``IGNORE_INDEX`` on the prompt's tokens and the token ids on the answer's.
    """
    context, continuation = encode_pair(tokenizer, prompt, answer_text(answer))
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
) -> float:
    """Mean per-token negative log-likelihood of the demonstrations' positive answers
    given their prompts (the quantity :meth:`LoRAEditor.train` minimises)."""
    examples = [answer_example(tokenizer, d.prompt, d.positive) for d in demos]
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
) -> tuple[nn.Module, list[float]]:
    """Fine-tune LoRA adapters on ``modules`` of a float32 deep copy of ``model``.

    AdamW for ``steps`` optimizer steps over seeded shuffled minibatches of the positive
    answers (loss on answer tokens only); the copy stays in eval mode (no dropout) so
    training is deterministic given ``seed``. ``model`` itself is not modified (checked).

    Returns the trained ``peft`` model (wrapping the copy) and the per-step losses.
    """
    from peft import LoraConfig, get_peft_model

    if not demos:
        raise ValueError("LoRA training needs at least one demonstration")
    if steps < 1 or batch_size < 1 or rank < 1:
        raise ValueError("steps, batch_size and rank must be positive")
    examples = [answer_example(tokenizer, d.prompt, d.positive) for d in demos]
    pad_id = pad_id_of(tokenizer)
    before, was_training = _parameter_state(model), model.training

    trained = copy.deepcopy(model).to(torch.float32).eval()
    _check_disjoint(model, trained)
    conv1d = all(isinstance(trained.get_submodule(name), Conv1D) for name in modules)
    config = LoraConfig(
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
        peft_model = get_peft_model(trained, config)
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


# --- the editor --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LoRAEditor(EditorBase):
    """Immutable LoRA adapters applied by hooks: ``out + α · scaling · B (A x)``.

    ``modules[i]`` is a linear layer's dotted name in the original model, ``lora_A[i]``
    is ``(r, in)``, ``lora_B[i]`` is ``(out, r)`` and ``scalings[i]`` is
    ``lora_alpha / r``. ``site`` is unused (always ``"residual"``); ``hidden_size``,
    ``num_layers`` and ``layer_path`` identify the model the adapters fit.
    """

    modules: tuple[str, ...]
    lora_A: tuple[torch.Tensor, ...]
    lora_B: tuple[torch.Tensor, ...]
    scalings: tuple[float, ...]
    hidden_size: int
    num_layers: int
    alpha: float = 1.0
    site: str = "residual"
    layer_path: str | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        count = len(self.modules)
        if count == 0:
            raise ValueError("a LoRA editor needs at least one module")
        if not len(self.lora_A) == len(self.lora_B) == len(self.scalings) == count:
            raise ValueError("one A, one B and one scaling are needed per module")
        if len(set(self.modules)) != count:
            raise ValueError("module names must be unique")
        for name, a, b, scaling in zip(
            self.modules, self.lora_A, self.lora_B, self.scalings, strict=True
        ):
            if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1] or a.shape[0] < 1:
                raise ValueError(
                    f"{name}: factors must be A (r, in) and B (out, r), got A "
                    f"{tuple(a.shape)} and B {tuple(b.shape)}"
                )
            if not (a.is_floating_point() and b.is_floating_point()):
                raise ValueError(f"{name}: LoRA factors must be floating point")
            if not math.isfinite(scaling):
                raise ValueError(f"{name}: scaling must be finite, got {scaling}")
        check_alpha(self.alpha)
        if self.hidden_size < 1 or self.num_layers < 1:
            raise ValueError("hidden_size and num_layers must be positive")
        check_site(self.site)

    @classmethod
    def train(
        cls,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        demos: Sequence[Demonstration],
        *,
        rank: int = 8,
        lora_alpha: float = 16,
        targets: Sequence[str] | None = None,
        layers: str | int | Sequence[int] | None = None,
        steps: int = 100,
        lr: float = 1e-4,
        batch_size: int = 8,
        seed: int = 0,
        layer_path: str | None = None,
        progress: bool | str = False,
    ) -> LoRAEditor:
        """Fine-tune LoRA adapters on the positive answers (see :func:`train_lora_copy`)
        on a copy of ``model`` and export them; ``model`` is left unchanged.

        ``targets``: module names inside a decoder layer (default: the attention query
        and value projections); ``layers``: decoder layers to adapt (default: all).
        ``metadata`` records the settings, the per-step training loss and the seconds.
        """
        modules = lora_target_modules(model, targets=targets, layers=layers, layer_path=layer_path)
        start = time.perf_counter()
        peft_model, losses = train_lora_copy(
            model,
            tokenizer,
            demos,
            modules,
            rank=rank,
            lora_alpha=lora_alpha,
            steps=steps,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            progress=progress,
        )
        seconds = time.perf_counter() - start
        metadata = {
            "n_demonstrations": len(demos),
            "rank": rank,
            "lora_alpha": lora_alpha,
            "steps": steps,
            "lr": lr,
            "batch_size": batch_size,
            "seed": seed,
            "loss_curve": losses,
            "train_seconds": seconds,
        }
        return cls.from_peft(peft_model, modules, layer_path=layer_path, metadata=metadata)

    @classmethod
    def from_peft(
        cls,
        peft_model: nn.Module,
        modules: Sequence[str],
        *,
        layer_path: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> LoRAEditor:
        """Export the active vanilla-LoRA adapter of ``peft_model`` on ``modules`` (dotted
        names in the wrapped, original model) as float32 CPU factors."""
        base = peft_model.get_base_model()
        adapter = peft_model.active_adapter
        factors_a, factors_b, scalings = [], [], []
        for name in modules:
            layer = base.get_submodule(name)
            if adapter not in getattr(layer, "lora_A", {}):
                raise ValueError(f"{name} has no LoRA adapter {adapter!r}")
            if adapter in getattr(layer, "lora_variant", {}) or layer.lora_bias.get(adapter):
                raise ValueError(f"{name}: only vanilla LoRA (no DoRA, no bias) can be exported")
            factors_a.append(layer.lora_A[adapter].weight.detach().to("cpu", torch.float32))
            factors_b.append(layer.lora_B[adapter].weight.detach().to("cpu", torch.float32))
            scalings.append(float(layer.scaling[adapter]))
        return cls(
            modules=tuple(modules),
            lora_A=tuple(a.clone() for a in factors_a),
            lora_B=tuple(b.clone() for b in factors_b),
            scalings=tuple(scalings),
            hidden_size=hidden_size_of(base),
            num_layers=len(find_decoder_layers(base, layer_path)),
            layer_path=layer_path,
            metadata=dict(metadata or {}),
        )

    def with_options(self, *, alpha: float | None = None) -> LoRAEditor:
        """A copy with another strength ``α`` (the factor on every adapter's delta)."""
        return self if alpha is None else dataclasses.replace(self, alpha=float(alpha))

    def locate(self, model: nn.Module) -> dict[str, nn.Module]:
        """The adapted linear layers of ``model`` by name; :class:`EditorFileError` if one
        is missing or its ``(in, out)`` does not match its factors."""
        found: dict[str, nn.Module] = {}
        for name, a, b in zip(self.modules, self.lora_A, self.lora_B, strict=True):
            try:
                module = model.get_submodule(name)
            except AttributeError as error:
                raise EditorFileError(
                    f"LoRA editor adapts {name!r}, which is not a linear layer of "
                    f"{type(model).__name__} ({error})"
                ) from error
            dims = linear_dims(module)
            if dims is None:
                raise EditorFileError(
                    f"LoRA editor adapts {name!r}, which is not a linear layer of "
                    f"{type(model).__name__} ({type(module).__name__} is not a linear layer "
                    "(nn.Linear or Conv1D))"
                )
            if dims != (a.shape[1], b.shape[0]):
                raise EditorFileError(
                    f"LoRA factors of {name!r} are for (in, out) = "
                    f"{(a.shape[1], b.shape[0])}, the model's layer is {dims}"
                )
            found[name] = module
        return found

    def check_model(self, model: nn.Module) -> None:
        """Raise :class:`EditorFileError` unless width and layer count fit ``model`` and
        every adapted module is a linear layer of it with the factors' ``(in, out)``."""
        super().check_model(model)
        self.locate(model)

    def attach(self, model: nn.Module) -> HookHandle:
        """Add the adapters' deltas to ``model`` until ``handle.remove()``."""
        modules = self.locate(model)
        factors = {
            name: (
                a.to(modules[name].weight.device, modules[name].weight.dtype),
                b.to(modules[name].weight.device, modules[name].weight.dtype),
                self.alpha * scaling,
            )
            for name, a, b, scaling in zip(
                self.modules, self.lora_A, self.lora_B, self.scalings, strict=True
            )
        }

        def add_delta(name: str, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
            if self.alpha == 0:
                return None
            a, b, factor = factors[name]
            delta = F.linear(F.linear(x.to(a.dtype), a), b) * factor
            return out + delta.to(out.dtype)

        return self._hook_modules(model, lambda: modules, add_delta, on="input-output")

    def save(self, path: str | Path) -> Path:
        """Write the editor to one ``.safetensors`` file, atomically."""
        header = editor_header(
            self,
            FORMAT_NAME,
            FORMAT_VERSION,
            modules=list(self.modules),
            scalings=list(self.scalings),
            site=self.site,
        )
        tensors = {}
        for name, a, b in zip(self.modules, self.lora_A, self.lora_B, strict=True):
            tensors[f"{name}.lora_A"] = a
            tensors[f"{name}.lora_B"] = b
        return write_editor_file(path, tensors, header)

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None) -> LoRAEditor:
        """Read and validate a LoRA editor file (and, given ``model``, that it fits)."""

        def names(header: dict[str, Any]) -> set[str]:
            return {f"{name}.{part}" for name in header["modules"] for part in ("lora_A", "lora_B")}

        def build(header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> LoRAEditor:
            modules = tuple(str(name) for name in header["modules"])
            return cls(
                modules=modules,
                lora_A=tuple(tensors[f"{name}.lora_A"] for name in modules),
                lora_B=tuple(tensors[f"{name}.lora_B"] for name in modules),
                scalings=tuple(float(s) for s in header["scalings"]),
                site=header.get("site", "residual"),
                **editor_fields(header),
            )

        required = ("modules", "scalings", *EDITOR_KEYS)
        return load_validated(path, FORMAT_NAME, FORMAT_VERSION, required, names, build, model)
