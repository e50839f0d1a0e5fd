"""Every method ``sea compare`` knows, behind one interface: prepare once from the
demonstrations (capture, train), then configure cheaply for each setting of its grid.

A configured method is an :class:`Intervention`: an editor whose hooks act on the model
(SEA, Φ-SEA and the baselines, all through the one hook machinery) and/or a scoring
readout (DoLa). Grids (:mod:`spectral_edit.experiments.settings`) have the same size for
every tuned method (the same tuning budget); ``none`` is the unedited model. Methods only
compute: what is kept between runs (the activations, a prepared editor) is stored by the
protocol (:mod:`spectral_edit.experiments.compare`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
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
from ..evaluate.readout import FINAL, DoLaReadout, Readout, parse_premature_layers
from ..hf.layers import find_decoder_layers, parse_layers
from .pipeline import fit_from_activations
from .settings import (
    DoLaSetting,
    ITISetting,
    LoRASetting,
    NoSetting,
    PhiSeaSetting,
    SeaSetting,
    SteeringSetting,
    grid,
)

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

    def layers(self, spec: str) -> list[int]:
        """Parse a grid's layer spec; ``last-L`` beyond the model's depth means all layers
        (grids are written for deep models and must still run on shallow ones)."""
        if spec.startswith("last-") and spec[5:].isdigit() and int(spec[5:]) > self.num_layers:
            spec = "all"
        return parse_layers(spec, self.num_layers)

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


def _nothing(ctx: FitContext) -> None:
    return None


def _unedited(state: None, setting: NoSetting, ctx: FitContext) -> Intervention:
    return Intervention()


def _sea(state: None, setting: SeaSetting | PhiSeaSetting, ctx: FitContext) -> Intervention:
    options = setting.options().replace(layer_path=ctx.layer_path)
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


def _prepare_lora(ctx: FitContext) -> LoRAEditor:
    return LoRAEditor.train(
        ctx.model,
        ctx.tokenizer,
        ctx.demos,
        **LORA_BUDGET,
        seed=ctx.seed,
        layer_path=ctx.layer_path,
        progress=ctx.progress,
        prompt_format=ctx.prompt_format,
    )


def _lora(state: LoRAEditor, setting: LoRASetting, ctx: FitContext) -> Intervention:
    return Intervention(state.with_options(alpha=setting.alpha))


def _dola(state: None, setting: DoLaSetting, ctx: FitContext) -> Intervention:
    readout = DoLaReadout(
        parse_premature_layers(setting.premature, ctx.num_layers),
        relative_top=setting.relative_top,
    )
    readout.check_model(ctx.num_layers)
    return Intervention(readout=readout)


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
SEA_GRID = grid(SeaSetting, layers=LAYER_AXIS, ratio=(0.99, 0.995))
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
    )
}


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
