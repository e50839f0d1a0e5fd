"""Every method ``sea compare`` knows, behind one interface: prepare once from the
demonstrations (capture, train), then configure cheaply for each setting of its grid.

A configured method is an :class:`Intervention`: an editor whose hooks act on the model
(SEA, Φ-SEA and the baselines, all through the one hook machinery) and/or a scoring
readout (DoLa; ICD and CD, which contrast the model with a weaker one:
:mod:`spectral_edit.evaluate.contrast`). Grids (:mod:`spectral_edit.experiments.settings`)
have the same size for every tuned method (the same tuning budget); ``none`` is the
unedited model. Methods only compute: what is kept between runs (the activations, a
prepared editor) is stored by the protocol (:mod:`spectral_edit.experiments.compare`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..core.options import Feature
from ..demos.activations import DemoActivations, capture_demos
from ..demos.format import Demonstration
from ..demos.prompts import PLAIN, PromptFormat
from ..editors.baselines import (
    ITIEditor,
    LeaceEditor,
    LoRAEditor,
    MeanDifferenceEditor,
    PCAVectorEditor,
)
from ..editors.baselines.induced import train_induced
from ..evaluate.contrast import Companion, ContrastReadout, check_same_tokenizer
from ..evaluate.readout import FINAL, DoLaReadout, Readout, parse_premature_layers
from ..hf.layers import TOP_SIGNATURE, capture_layers, find_decoder_layers
from ..hf.model_names import BUILTIN_MODELS
from ..util.identity import shareable_name
from .pipeline import fit_from_activations
from .settings import (
    ContrastSetting,
    DoLaSetting,
    ITISetting,
    LoRASetting,
    NoSetting,
    PhiSeaSetting,
    SeaSetting,
    SteeringSetting,
    grid,
)
from .store import model_key, options_key

S = TypeVar("S")


@dataclass(frozen=True)
class Intervention:
    """What a configured method changes at evaluation: hooks of ``editor`` (anything with
    ``apply(model)``), and the ``readout`` the scorer uses."""

    editor: Any | None = None
    readout: Readout = FINAL

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """The model with the editor's hooks inside the block (removed on exit)."""
        if self.editor is None:
            yield model
        else:
            with self.editor.apply(model):
                yield model


@dataclass
class FitContext:
    """The model, the demonstrations and what several methods share: the demonstrations'
    last-token residual activations at every layer, ``captured`` on first use (or given
    by the caller, who stored them earlier; ``capture_seconds`` is then the stored time).
    ``prompt_format``: how every method sees the demonstrations (plain prompts or a chat
    template), the same as the evaluation's."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    demos: Sequence[Demonstration]
    neutral: str = "generate"
    batch_size: int = 8
    layer_path: str | None = None
    seed: int = 0
    progress: bool = False
    prompt_format: PromptFormat = PLAIN
    captured: DemoActivations | None = None
    capture_seconds: float = 0.0

    @property
    def num_layers(self) -> int:
        return len(find_decoder_layers(self.model, self.layer_path))

    def layer_spec(self, spec: str) -> str:
        """A grid's layer spec on this model: ``last-L`` beyond the model's depth means all
        layers, ``top-signature-L`` beyond it the top-signature choice of all of them
        (grids are written for deep models and must still run on shallow ones)."""
        top = f"{TOP_SIGNATURE}{self.num_layers}"
        for prefix, deeper in (("last-", "all"), (TOP_SIGNATURE, top)):
            count = spec[len(prefix) :]
            if spec.startswith(prefix) and count.isdigit() and int(count) > self.num_layers:
                return deeper
        return spec

    def layers(self, spec: str) -> list[int]:
        """The layers of a grid's layer spec (:meth:`layer_spec`); for ``top-signature-L``
        every layer: the candidates the SEA fit chooses L of."""
        return capture_layers(self.layer_spec(spec), self.num_layers)

    def activations(self) -> DemoActivations:
        """``(N, L_all, d)`` neutral/positive/negative activations at every layer."""
        if self.captured is None:
            started = time.perf_counter()
            self.captured = capture_demos(
                self.model,
                self.tokenizer,
                self.demos,
                layers=list(range(self.num_layers)),
                neutral=self.neutral,
                batch_size=self.batch_size,
                layer_path=self.layer_path,
                progress=self.progress,
                prompt_format=self.prompt_format,
            )
            self.capture_seconds = time.perf_counter() - started
        return self.captured

    def subset(self, spec: str) -> DemoActivations:
        """The activations at the layers of ``spec``: ``(N, L, d)`` each."""
        layers = self.layers(spec)
        acts = self.activations()
        index = [acts.layers.index(layer) for layer in layers]
        return DemoActivations(
            acts.neutral[:, index], acts.positive[:, index], acts.negative[:, index], tuple(layers)
        )

    def arrays(self, spec: str) -> tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]:
        """Layer ids of ``spec`` and the (neutral, positive, negative) ``(N, L, d)`` slices."""
        acts = self.subset(spec)
        return list(acts.layers), acts.neutral, acts.positive, acts.negative


@dataclass(frozen=True)
class MethodSpec(Generic[S]):
    """``prepare(ctx)`` does the expensive work once; ``configure(state, setting, ctx)``
    turns it into an :class:`Intervention` for one setting of ``grid``. Where the prepared
    state is an editor (``state.save(path)``), ``load_state(path)`` reads it back, so that
    the protocol can store it and a resumed comparison does not prepare (e.g. train)
    again. ``uses_activations``: configuring reads the shared activations."""

    name: str
    description: str
    grid: tuple[S, ...]
    prepare: Callable[[FitContext], Any]
    configure: Callable[[Any, S, FitContext], Intervention]
    uses_activations: bool = False
    load_state: Callable[[Path], Any] | None = None
    key: Mapping[str, Any] = field(default_factory=dict)
    """More of what the method's results depend on (CD: the amateur model), in its keys."""


def _nothing(ctx: FitContext) -> None:
    return None


def _unedited(state: None, setting: NoSetting, ctx: FitContext) -> Intervention:
    return Intervention()


def _sea(state: None, setting: SeaSetting | PhiSeaSetting, ctx: FitContext) -> Intervention:
    options = setting.options().replace(
        layer_path=ctx.layer_path, layers=ctx.layer_spec(setting.layers)
    )
    return Intervention(fit_from_activations(ctx.subset(setting.layers), ctx.num_layers, options))


SteeringEditor = type[MeanDifferenceEditor] | type[PCAVectorEditor] | type[LeaceEditor]


def _steering(
    name: str, description: str, editor: SteeringEditor, alphas: tuple[float, float]
) -> MethodSpec[SteeringSetting]:
    """A vector method: ``editor.fit`` on the positive/negative activations per setting."""

    def configure(state: None, setting: SteeringSetting, ctx: FitContext) -> Intervention:
        layers, _, positive, negative = ctx.arrays(setting.layers)
        fitted = editor.fit(
            positive,
            negative,
            layers=layers,
            num_layers=ctx.num_layers,
            alpha=setting.alpha,
            layer_path=ctx.layer_path,
        )
        return Intervention(fitted)

    settings = grid(SteeringSetting, layers=LAYER_AXIS, alpha=alphas)
    return MethodSpec(name, description, settings, _nothing, configure, uses_activations=True)


def _prepare_iti(ctx: FitContext) -> ITIEditor:
    return ITIEditor.fit_model(
        ctx.model,
        ctx.tokenizer,
        ctx.demos,
        top_k=max(s.top_k for s in ITI_GRID),
        seed=ctx.seed,
        batch_size=ctx.batch_size,
        layer_path=ctx.layer_path,
        progress=ctx.progress,
        prompt_format=ctx.prompt_format,
    )


def _iti(state: ITIEditor, setting: ITISetting, ctx: FitContext) -> Intervention:
    return Intervention(state.with_options(top_k=setting.top_k, alpha=setting.alpha))


def _budgeted(train: Callable[..., LoRAEditor], ctx: FitContext) -> LoRAEditor:
    """``train`` (the LoRA trainer, or ICD's on the negative answers) on the context's
    demonstrations with the one LoRA budget."""
    return train(
        ctx.model,
        ctx.tokenizer,
        ctx.demos,
        **LORA_BUDGET,
        seed=ctx.seed,
        layer_path=ctx.layer_path,
        progress=ctx.progress,
        prompt_format=ctx.prompt_format,
    )


def _prepare_lora(ctx: FitContext) -> LoRAEditor:
    return _budgeted(LoRAEditor.train, ctx)


def _lora(state: LoRAEditor, setting: LoRASetting, ctx: FitContext) -> Intervention:
    return Intervention(state.with_options(alpha=setting.alpha))


def _dola(state: None, setting: DoLaSetting, ctx: FitContext) -> Intervention:
    readout = DoLaReadout(
        parse_premature_layers(setting.premature, ctx.num_layers),
        relative_top=setting.relative_top,
    )
    readout.check_model(ctx.num_layers)
    return Intervention(readout=readout)


def _prepare_icd(ctx: FitContext) -> LoRAEditor:
    return _budgeted(train_induced, ctx)


def _icd(state: LoRAEditor, setting: ContrastSetting, ctx: FitContext) -> Intervention:
    companion = Companion(ctx.model, state, "induced model")
    readout = ContrastReadout(companion, setting.beta, setting.plausibility, name="icd")
    return Intervention(readout=readout)


NO_AMATEUR = (
    "cd needs an amateur model with the model's tokenizer (--amateur M, or "
    "contrastive_decoding(amateur, name) in the registry)"
)


def _no_amateur(ctx: FitContext) -> None:
    raise ValueError(NO_AMATEUR)


def _unconfigured(state: None, setting: ContrastSetting, ctx: FitContext) -> Intervention:
    raise ValueError(NO_AMATEUR)


def contrastive_decoding(amateur: nn.Module, name: str, key: str) -> MethodSpec[ContrastSetting]:
    """CD (Li et al. 2023) against ``amateur`` (a causal LM with the model's tokenizer:
    :func:`~spectral_edit.evaluate.contrast.check_same_tokenizer`), on the contrast grid;
    ``name`` describes it, ``key`` identifies it by content (in every unit's key)."""

    def configure(state: None, setting: ContrastSetting, ctx: FitContext) -> Intervention:
        companion = Companion(amateur, None, f"amateur {name}")
        readout = ContrastReadout(companion, setting.beta, setting.plausibility, name="cd")
        return Intervention(readout=readout)

    description = f"CD: (1+β)·log p − β·log p_amateur ({name}), plausibility λ"
    return MethodSpec("cd", description, CONTRAST_GRID, _nothing, configure, key={"amateur": key})


LAYER_AXIS = ("last-4", "last-8")
LORA_BUDGET: dict[str, Any] = {
    "rank": 8,
    "lora_alpha": 16,
    "steps": 100,
    "lr": 2e-4,
    "batch_size": 8,
}
"""The training reference's fixed budget: rank-8 adapters on the attention query and value
projections of every layer, 100 AdamW steps of 8 answers (CPU-friendly)."""
ITI_GRID = grid(ITISetting, top_k=(8, 24), alpha=(5.0, 15.0))
SEA_GRID = grid(SeaSetting, layers=("last-8", f"{TOP_SIGNATURE}8"), ratio=(0.99, 0.995))
"""SEA's grid: the top 8 layers, or the 8 of highest signature (the paper's heuristic),
at two energy ratios; 4 settings, as every grid."""
CONTRAST_GRID = grid(ContrastSetting, beta=(0.5, 2.0), plausibility=(0.1, 0.0))
"""ICD's and CD's grid: β (ICD and CD papers use values around 1) and λ with or without
the plausibility constraint (as DoLa's ``relative_top`` axis); 4 settings, as every grid."""
PHI_SEA_GRID = grid(
    PhiSeaSetting, layers=LAYER_AXIS, feature=(Feature.TANH, Feature.SQUARED_EXPONENTIAL)
)

METHODS: dict[str, MethodSpec[Any]] = {
    spec.name: spec
    for spec in (
        MethodSpec("none", "unedited model", (NoSetting(),), _nothing, _unedited),
        MethodSpec(
            "sea",
            "SEA, linear, centred covariances",
            SEA_GRID,
            _nothing,
            _sea,
            uses_activations=True,
        ),
        MethodSpec(
            "phi-sea",
            "Φ-SEA (non-linear feature map), centred, ratio 0.99",
            PHI_SEA_GRID,
            _nothing,
            _sea,
            uses_activations=True,
        ),
        _steering(
            "mean-diff",
            "mean-difference steering (CAA): h + α(mean h+ − mean h−)",
            MeanDifferenceEditor,
            (0.5, 2.0),
        ),
        _steering(
            "pca-vector",
            "PCA control vector of paired differences (repeng pca_diff), h + α·s·u",
            PCAVectorEditor,
            (0.5, 2.0),
        ),
        MethodSpec(
            "iti",
            "ITI: top-K attention heads by probe accuracy, shifted α·σ along mass-mean",
            ITI_GRID,
            _prepare_iti,
            _iti,
            load_state=ITIEditor.load,
        ),
        _steering(
            "leace",
            "LEACE erasure of the positive/negative label, h − α·correction",
            LeaceEditor,
            (0.5, 1.0),
        ),
        MethodSpec(
            "lora",
            "LoRA fine-tuning on the positive answers (fixed budget), delta scaled by α",
            grid(LoRASetting, alpha=(0.5, 1.0, 1.5, 2.0)),
            _prepare_lora,
            _lora,
            load_state=LoRAEditor.load,
        ),
        MethodSpec(
            "dola",
            "DoLa contrastive layer scoring (premature bucket, plausibility threshold)",
            grid(DoLaSetting, premature=("early", "late"), relative_top=(0.1, 0.0)),
            _nothing,
            _dola,
        ),
        MethodSpec(
            "icd",
            "ICD: (1+β)·log p − β·log p_induced, LoRA on the negative answers, plausibility λ",
            CONTRAST_GRID,
            _prepare_icd,
            _icd,
            load_state=LoRAEditor.load,
        ),
        MethodSpec(
            "cd",
            "CD: (1+β)·log p − β·log p_amateur (needs an amateur model), plausibility λ",
            CONTRAST_GRID,
            _no_amateur,
            _unconfigured,
        ),
    )
}


def without_amateur(names: Sequence[str], model_name: str) -> tuple[list[str], str | None]:
    """``names`` without ``cd`` when no amateur model is given, and the message saying why
    (``None`` when ``cd`` was not asked for). CD needs a second, weaker model with the
    model's tokenizer; the built-in models (Gemma 3 270M is the smallest Gemma 3) have
    none here, and no same-model stand-in is substituted: the literature's same-model
    contrasts are ICD (``icd``, a LoRA-weakened copy) and DoLa (``dola``, an early layer)."""
    if "cd" not in names:
        return list(names), None
    why = (
        "cd skipped: contrastive decoding needs an amateur model with the model's tokenizer "
        "(--amateur M, any Hugging Face causal LM); none was given"
    )
    if model_name in BUILTIN_MODELS:
        why += (
            f". For {model_name} none exists here: it is the smallest model with its "
            "tokenizer. The same-model contrasts of the literature are icd (a LoRA-weakened "
            "copy of the model, Zhang et al. 2023) and dola (an early layer); no stand-in "
            "amateur is substituted"
        )
    return [n for n in names if n != "cd"], why + "."


def with_amateur(
    registry: Mapping[str, MethodSpec[Any]],
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    amateur: nn.Module,
    amateur_tokenizer: PreTrainedTokenizerBase,
    name: str,
) -> dict[str, MethodSpec[Any]]:
    """``registry`` with ``cd`` contrasting against ``amateur`` (``name``: how it was named,
    e.g. a Hub id; identified by :func:`~.store.model_key` in the units' keys).

    Raises:
        ValueError: the amateur's tokenizer or vocabulary is not the model's
            (:func:`~spectral_edit.evaluate.contrast.check_same_tokenizer`).
    """
    check_same_tokenizer(tokenizer, amateur_tokenizer, model, amateur, name)
    spec = contrastive_decoding(
        amateur, shareable_name(name), options_key(model_key(amateur, name))
    )
    return {**registry, "cd": spec}


def parse_methods(spec: str | Sequence[str]) -> list[str]:
    """``"none,sea,..."`` → method names, checked against :data:`METHODS`."""
    names = [n.strip() for n in spec.split(",")] if isinstance(spec, str) else list(spec)
    names = [n for n in names if n]
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
    if not names:
        raise ValueError("no methods given")
    if len(set(names)) != len(names):
        raise ValueError(f"a method is named twice in {names}")
    return names
