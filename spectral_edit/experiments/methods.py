"""Every method ``sea compare`` knows, behind one interface: prepare once from the
demonstrations (capture, train), then configure cheaply for each setting of its grid.

A configured method is an :class:`Intervention`: an editor whose hooks act on the model
(SEA, Φ-SEA and the baselines, all through the one hook machinery) and/or a scoring
readout (DoLa). Grids have the same size for every tuned method (the same tuning budget);
``none`` is the unedited model.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..demos.format import DemoActivations, Demonstration, capture_demos
from ..editors.sea_fit import fit_from_arrays
from ..evaluate.readout import FINAL, DoLaReadout, Readout, parse_premature_layers
from ..hf.layers import find_decoder_layers, parse_layers

Setting = Mapping[str, Any]


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
    last-token residual activations at every layer, captured once on first use."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    demos: Sequence[Demonstration]
    neutral: str = "generate"
    batch_size: int = 8
    layer_path: str | None = None
    seed: int = 0
    progress: bool = False
    activations_loader: Callable[[], tuple[DemoActivations, float] | None] | None = None
    activations_saver: Callable[[DemoActivations, float], None] | None = None
    capture_seconds: float = 0.0
    _activations: DemoActivations | None = field(default=None, repr=False)

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
        if self._activations is None and self.activations_loader is not None:
            loaded = self.activations_loader()
            if loaded is not None:
                self._activations, self.capture_seconds = loaded
        if self._activations is None:
            started = time.perf_counter()
            self._activations = capture_demos(
                self.model,
                self.tokenizer,
                self.demos,
                layers=list(range(self.num_layers)),
                neutral=self.neutral,
                batch_size=self.batch_size,
                layer_path=self.layer_path,
                progress=self.progress,
            )
            self.capture_seconds = time.perf_counter() - started
            if self.activations_saver is not None:
                self.activations_saver(self._activations, self.capture_seconds)
        return self._activations

    def arrays(self, spec: str) -> tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]:
        """Layer ids of ``spec`` and the (neutral, positive, negative) ``(N, L, d)`` slices."""
        layers = self.layers(spec)
        acts = self.activations()
        index = [acts.layers.index(layer) for layer in layers]
        return layers, acts.neutral[:, index], acts.positive[:, index], acts.negative[:, index]


@dataclass(frozen=True)
class MethodSpec:
    """``prepare(ctx)`` does the expensive work once; ``configure(state, setting, ctx)``
    turns it into an :class:`Intervention` for one setting of ``grid``. Where the prepared
    state is an editor (``state.save(path)``), ``load_state(path)`` reads it back, so a
    resumed comparison does not prepare (e.g. train) again."""

    name: str
    description: str
    grid: tuple[Setting, ...]
    prepare: Callable[[FitContext], Any]
    configure: Callable[[Any, Setting, FitContext], Intervention]
    uses_activations: bool = False
    load_state: Callable[[Path], Any] | None = None


def _grid(**axes: Sequence[Any]) -> tuple[dict[str, Any], ...]:
    """The Cartesian product of named axes, in order (first axis slowest)."""
    settings: list[dict[str, Any]] = [{}]
    for name, values in axes.items():
        settings = [{**s, name: v} for s in settings for v in values]
    return tuple(settings)


def _nothing(ctx: FitContext) -> None:
    return None


def _sea(state: None, setting: Setting, ctx: FitContext) -> Intervention:
    layers, neutral, positive, negative = ctx.arrays(setting["layers"])
    editor = fit_from_arrays(
        neutral,
        positive,
        negative,
        layers=layers,
        num_layers=ctx.num_layers,
        pos_ratio=setting.get("ratio", 0.99),
        neg_ratio=setting.get("ratio", 0.99),
        centered=True,
        feature=setting.get("feature", "linear"),
        layer_path=ctx.layer_path,
    )
    return Intervention(editor)


def _steering(cls_name: str) -> Callable[[None, Setting, FitContext], Intervention]:
    def configure(state: None, setting: Setting, ctx: FitContext) -> Intervention:
        from ..editors import baselines

        layers, _, positive, negative = ctx.arrays(setting["layers"])
        editor = getattr(baselines, cls_name).fit(
            positive,
            negative,
            layers=layers,
            num_layers=ctx.num_layers,
            alpha=setting["alpha"],
            layer_path=ctx.layer_path,
        )
        return Intervention(editor)

    return configure


def _prepare_iti(ctx: FitContext) -> Any:
    from ..editors.baselines import ITIEditor

    return ITIEditor.fit_model(
        ctx.model,
        ctx.tokenizer,
        ctx.demos,
        top_k=max(s["top_k"] for s in ITI_GRID),
        seed=ctx.seed,
        batch_size=ctx.batch_size,
        layer_path=ctx.layer_path,
        progress=ctx.progress,
    )


def _prepare_lora(ctx: FitContext) -> Any:
    from ..editors.baselines import LoRAEditor

    return LoRAEditor.train(
        ctx.model,
        ctx.tokenizer,
        ctx.demos,
        **LORA_BUDGET,
        seed=ctx.seed,
        layer_path=ctx.layer_path,
        progress=ctx.progress,
    )


def _load_iti(path: Path) -> Any:
    from ..editors.baselines import ITIEditor

    return ITIEditor.load(path)


def _load_lora(path: Path) -> Any:
    from ..editors.baselines import LoRAEditor

    return LoRAEditor.load(path)


def _with_options(state: Any, setting: Setting, ctx: FitContext) -> Intervention:
    return Intervention(state.with_options(**setting))


def _dola(state: None, setting: Setting, ctx: FitContext) -> Intervention:
    readout = DoLaReadout(
        parse_premature_layers(setting["premature"], ctx.num_layers),
        relative_top=setting["relative_top"],
    )
    readout.check_model(ctx.num_layers)
    return Intervention(readout=readout)


LAYER_AXIS = ("last-4", "last-8")
LORA_BUDGET = {"rank": 8, "lora_alpha": 16, "steps": 100, "lr": 2e-4, "batch_size": 8}
"""The training reference's fixed budget: rank-8 adapters on the attention query and value
projections of every layer, 100 AdamW steps of 8 answers (CPU-friendly)."""
ITI_GRID = _grid(top_k=(8, 24), alpha=(5.0, 15.0))

METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("none", "unedited model", ({},), _nothing, lambda s, g, c: Intervention()),
        MethodSpec(
            "sea",
            "SEA, linear, centred covariances",
            _grid(layers=LAYER_AXIS, ratio=(0.99, 0.995)),
            _nothing,
            _sea,
            uses_activations=True,
        ),
        MethodSpec(
            "phi-sea",
            "Φ-SEA (non-linear feature map), centred, ratio 0.99",
            _grid(layers=LAYER_AXIS, feature=("tanh", "squared-exponential")),
            _nothing,
            _sea,
            uses_activations=True,
        ),
        MethodSpec(
            "mean-diff",
            "mean-difference steering (CAA): h + α(mean h+ − mean h−)",
            _grid(layers=LAYER_AXIS, alpha=(0.5, 2.0)),
            _nothing,
            _steering("MeanDifferenceEditor"),
            uses_activations=True,
        ),
        MethodSpec(
            "pca-vector",
            "PCA control vector of paired differences (repeng pca_diff), h + α·s·u",
            _grid(layers=LAYER_AXIS, alpha=(0.5, 2.0)),
            _nothing,
            _steering("PCAVectorEditor"),
            uses_activations=True,
        ),
        MethodSpec(
            "iti",
            "ITI: top-K attention heads by probe accuracy, shifted α·σ along mass-mean",
            ITI_GRID,
            _prepare_iti,
            _with_options,
            load_state=_load_iti,
        ),
        MethodSpec(
            "leace",
            "LEACE erasure of the positive/negative label, h − α·correction",
            _grid(layers=LAYER_AXIS, alpha=(0.5, 1.0)),
            _nothing,
            _steering("LeaceEditor"),
            uses_activations=True,
        ),
        MethodSpec(
            "lora",
            "LoRA fine-tuning on the positive answers (fixed budget), delta scaled by α",
            _grid(alpha=(0.5, 1.0, 1.5, 2.0)),
            _prepare_lora,
            _with_options,
            load_state=_load_lora,
        ),
        MethodSpec(
            "dola",
            "DoLa contrastive layer scoring (premature bucket, plausibility threshold)",
            _grid(premature=("early", "late"), relative_top=(0.1, 0.0)),
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


def setting_id(setting: Setting) -> str:
    """A short, stable, file-name-safe name of a setting (``layers=last-4,ratio=0.99``)."""
    if not setting:
        return "default"
    return ",".join(f"{k}={v}" for k, v in setting.items())
