"""``sea tune``: every method's strength α calibrated under a harm budget, then reported on
held-out data.

Protocol. For each method of :data:`~spectral_edit.experiments.methods.METHODS` but
``none`` and ``dola`` (no strength α; for ICD and CD the contrast strength β is calibrated
as α, and KL is that of the contrast readout's next-token distribution) and each of its
configurations
(:data:`TUNE_CONFIGS`: a small set, e.g. the layer axis), the method is configured once
at α = 1 (``MethodSpec.prepare`` / ``configure``) and every probe is the editor
``.with_options(alpha=α)``. A probe is scored on the *tuning* part: the target
(:mod:`~spectral_edit.experiments.tune_targets`; TruthfulQA fold 1 by default), the
control tasks on items ``[0, n)`` and the mean KL on neutral texts ``[0, m)``; its harms
are ``control_points`` (the unedited model's control average minus the edited one) and
``kl_nats`` (plus the target's own, e.g. BBQ's stereotype rate). α is calibrated per
configuration by :func:`~spectral_edit.experiments.calibrate.calibrate` with the method's
evaluations split evenly over its configurations (every method gets the same total); the
best feasible probe over the configurations is chosen and reported on the *held-out*
part: the target's report part (TruthfulQA fold 2), control items ``[n, 2n)``, neutral
texts ``[m, 2m)``.

KL is measured through the harm API (:class:`KLMeter`; by default
:mod:`spectral_edit.evaluate.kl`): the unedited model's reference is built once per text
set, on first use, and reused by every probe of every method.

Persistence is the one store's (:mod:`spectral_edit.experiments.store`): the shared
activations (``out/activations.safetensors``), each method's prepared editor
(``out/units/<method>/prepared.safetensors``), the unedited model's units
(``out/baseline/*.json``) and every probe and held-out run
(``out/units/<method>/<config>--alpha=<α>--tune.json`` / ``--report.json``), each under
the key of everything it depends on (not the budget: a rerun with another budget reuses
every probe at a strength already tried). A method that fails is reported with its error
(``error.json``) and the others go on.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from ..core.options import Feature, check_count
from ..data.control import load_control_task
from ..demos.format import Demonstration
from ..demos.prompts import PLAIN, PromptFormat
from ..evaluate.contrast import ContrastReadout
from ..evaluate.control import evaluate_control
from ..evaluate.harm import neutral_texts
from ..evaluate.kl import build_kl_reference, measure_kl, measure_readout_kl
from ..util.identity import shareable_name
from ..util.report import write_json
from .calibrate import Budget, Calibration, Probe, ProbeRecord, calibrate
from .compare import MethodRun, SharedActivations, control_data_key
from .compare_results import MethodFailure
from .methods import LAYER_AXIS, METHODS, FitContext, Intervention, MethodSpec
from .settings import (
    ContrastSetting,
    ITISetting,
    LoRASetting,
    PhiSeaSetting,
    SeaSetting,
    SteeringSetting,
    grid,
    setting_fields,
    setting_id,
)
from .store import Store, content_key, model_key, options_key
from .tune_report import TuneReport
from .tune_results import (
    CONTROL_HARM,
    KL_HARM,
    Baseline,
    HeldOut,
    MethodTune,
    TuneOptions,
    control_loss,
)
from .tune_targets import Part, Target

__all__ = [
    "DEFAULT_ALPHA_RANGES",
    "TUNE_CONFIGS",
    "UNTUNABLE",
    "KLMeter",
    "alpha_range",
    "contract_kl_meter",
    "load_kl_texts",
    "parse_alpha_ranges",
    "run_tune",
    "split_evaluations",
]

UNTUNABLE: dict[str, str] = {
    "none": "the unedited model: no strength to tune",
    "dola": "DoLa changes the readout and has no strength α",
}
"""Methods of :data:`METHODS` that ``sea tune`` leaves out, and why."""

DEFAULT_ALPHA_RANGES: dict[str, tuple[float, float]] = {
    "sea": (0.05, 4.0),
    "phi-sea": (0.05, 4.0),
    "mean-diff": (0.05, 8.0),
    "pca-vector": (0.05, 8.0),
    "leace": (0.05, 2.0),
    "iti": (0.5, 40.0),
    "lora": (0.05, 4.0),
    "icd": (0.05, 8.0),
    "cd": (0.05, 8.0),
}
"""Each method's default α interval ``[lo, hi]`` (α = 1 is the configured editor: SEA's
full edit, the vectors' unit strength, LEACE's full erasure, ITI's one standard deviation,
LoRA's trained delta; for ICD and CD α is the contrast strength β, 1 the papers' usual
value). ``--alpha-range`` overrides them."""

FALLBACK_ALPHA_RANGE = (0.05, 4.0)
"""The interval of a method without a default (a caller's own registry)."""

TUNE_CONFIGS: dict[str, tuple[Any, ...]] = {
    "sea": grid(SeaSetting, layers=("last-8",), ratio=(0.99, 0.995)),
    "phi-sea": grid(PhiSeaSetting, layers=LAYER_AXIS, feature=(Feature.SQUARED_EXPONENTIAL,)),
    "mean-diff": grid(SteeringSetting, layers=LAYER_AXIS, alpha=(1.0,)),
    "pca-vector": grid(SteeringSetting, layers=LAYER_AXIS, alpha=(1.0,)),
    "leace": grid(SteeringSetting, layers=LAYER_AXIS, alpha=(1.0,)),
    "iti": grid(ITISetting, top_k=(8, 24), alpha=(1.0,)),
    "lora": (LoRASetting(alpha=1.0),),
    "icd": grid(ContrastSetting, beta=(1.0,), plausibility=(0.1, 0.0)),
    "cd": grid(ContrastSetting, beta=(1.0,), plausibility=(0.1, 0.0)),
}
"""Each tuned method's discrete configurations, configured at α = 1: the layer axis of the
layer methods, the energy ratio of SEA, the number of heads of ITI; LoRA has one (its
delta is trained once), so its evaluations all go to that one; ICD and CD, with or
without the plausibility constraint (λ = 0.1, the papers' threshold, or 0), their
contrast strength β calibrated as α."""


def parse_alpha_ranges(specs: Sequence[str]) -> tuple[tuple[str, float, float], ...]:
    """``["0.1,4", "iti=1,40"]`` → ``(("*", 0.1, 4.0), ("iti", 1.0, 40.0))``: ``lo,hi``
    for every method, ``method=lo,hi`` for one.

    Raises:
        ValueError: a malformed range, or ``0 < lo < hi`` not holding.
    """
    out = []
    for spec in specs:
        method, _, numbers = spec.rpartition("=")
        parts = numbers.split(",")
        try:
            lo, hi = (float(p) for p in parts)
        except ValueError:
            raise ValueError(f"an α range is 'lo,hi' or 'method=lo,hi', not {spec!r}") from None
        if not 0 < lo < hi < float("inf"):
            raise ValueError(f"an α range needs 0 < lo < hi, got {spec!r}")
        out.append((method.strip() or "*", lo, hi))
    return tuple(out)


def alpha_range(options: TuneOptions, method: str) -> tuple[float, float]:
    """The α interval of ``method``: its override, else the ``*`` override, else its
    default (:data:`DEFAULT_ALPHA_RANGES`)."""
    overrides = {m: (lo, hi) for m, lo, hi in options.alpha_ranges}
    if method in overrides:
        return overrides[method]
    if "*" in overrides:
        return overrides["*"]
    return DEFAULT_ALPHA_RANGES.get(method, FALLBACK_ALPHA_RANGE)


def split_evaluations(total: int, parts: int) -> list[int]:
    """``total`` evaluations over ``parts`` configurations, as evenly as possible (the
    first ones get the remainder); every part gets at least one.

    Raises:
        ValueError: ``total < parts`` or ``parts < 1``.
    """
    if parts < 1 or total < parts:
        raise ValueError(f"{total} evaluations cannot be split over {parts} configurations")
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# ---------------------------------------------------------------------------- KL


@dataclass(frozen=True)
class KLMeter:
    """How probes measure KL on neutral text: ``build(model, tokenizer, texts)`` → the
    unedited reference (built once per text set), ``measure(model, reference, editor)`` →
    a summary with at least ``kl_mean`` and ``kl_p95`` (nats per token, KL(edited ‖
    unedited)). ``key``: what identifies the measure in the stored units' keys."""

    build: Callable[[nn.Module, PreTrainedTokenizerBase, Sequence[str]], Any]
    measure: Callable[[nn.Module, Any, Any], Mapping[str, Any]]
    key: Mapping[str, Any] = field(default_factory=dict)
    measure_readout: Callable[[nn.Module, Any, Any], Mapping[str, Any]] | None = None
    """``(model, reference, readout)`` → the same summary for a contrast readout (ICD, CD:
    KL of its next-token distribution); ``None``: such methods cannot be tuned."""


def contract_kl_meter(max_tokens: int = 128, batch_size: int = 8) -> KLMeter:
    """The KL of :mod:`spectral_edit.evaluate.kl` (``build_kl_reference`` /
    ``measure_kl``), texts cut to ``max_tokens`` tokens."""

    def build(model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> Any:
        return build_kl_reference(
            model, tokenizer, texts, max_tokens=max_tokens, batch_size=batch_size
        )

    def measure(model: nn.Module, reference: Any, editor: Any) -> Mapping[str, Any]:
        result = measure_kl(model, reference, editor, batch_size=batch_size)
        return dict(result.summary)

    def measure_readout(model: nn.Module, reference: Any, readout: Any) -> Mapping[str, Any]:
        result = measure_readout_kl(model, reference, readout, batch_size=batch_size)
        return dict(result.summary)

    key = {"kl": "evaluate.kl", "max_tokens": max_tokens}
    return KLMeter(build, measure, key, measure_readout)


def load_kl_texts(count: int, data_dir: str | Path | None = None) -> list[str]:
    """The first ``count`` neutral texts (:func:`~spectral_edit.evaluate.harm.neutral_texts`:
    HaluEval general responses, file order).

    Raises:
        ValueError: fewer than ``count`` texts.
    """
    texts = neutral_texts(data_dir, limit=count)
    if len(texts) < count:
        raise ValueError(f"{count} neutral texts needed, the data has {len(texts)}")
    return texts


# ---------------------------------------------------------------------------- the run


@dataclass
class _Tuner:
    """One tuning run's shared pieces: the model, the target, the neutral texts of each
    part (and their KL references, built on first use), the unedited figures."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    target: Target
    options: TuneOptions
    texts: Mapping[Part, Sequence[str]]
    meter: KLMeter
    data_dir: str | Path | None
    echo: Callable[[str], None]
    progress: bool
    prompt_format: PromptFormat = PLAIN
    references: dict[Part, Any] = field(default_factory=dict)
    baseline: Baseline | None = None
    control_key: str = ""
    """:func:`~.compare.control_data_key` of the control tasks (set by :func:`run_tune`)."""

    def reference(self, part: Part) -> Any:
        """The unedited KL reference of the part's texts (built once; call it outside
        any edit)."""
        if part not in self.references:
            self.references[part] = self.meter.build(self.model, self.tokenizer, self.texts[part])
        return self.references[part]

    def part_key(self, part: Part, *, kl: bool = True) -> dict[str, Any]:
        """What a unit on ``part`` depends on besides the method and α."""
        o = self.options
        key: dict[str, Any] = {
            "target": self.target.name,
            "items": self.target.items(part),
            "control": {
                "tasks": list(o.control_tasks),
                "limit": o.control_limit,
                "offset": 0 if part == "tune" else o.control_limit,
                "items": self.control_key,
            },
            "batch_size": o.batch_size,
            **self.prompt_format.key(),
        }
        if kl:
            key["kl"] = {**self.meter.key, "texts": content_key(self.texts[part])}
        return key

    def _score(self, intervention: Intervention, part: Part, label: str) -> dict[str, Any]:
        """Target and control tasks of ``part`` under ``intervention``."""
        o = self.options
        with intervention.applied(self.model):
            target = self.target.score(
                self.model,
                self.tokenizer,
                part,
                readout=intervention.readout,
                batch_size=o.batch_size,
                progress=label if self.progress else False,
                prompt_format=self.prompt_format,
            )
            control = evaluate_control(
                self.model,
                self.tokenizer,
                list(o.control_tasks),
                data_dir=self.data_dir,
                limit=o.control_limit,
                offset=0 if part == "tune" else o.control_limit,
                batch_size=o.batch_size,
                readout=intervention.readout,
                progress=self.progress,
                prompt_format=self.prompt_format,
            )
        return {"target": target, "control": control.summary}

    def measured(self, intervention: Intervention, part: Part, label: str) -> dict[str, Any]:
        """KL (measured first, outside the edit, so the reference is unedited), target
        and control tasks of ``part`` under ``intervention``."""
        reference = self.reference(part)
        if isinstance(intervention.readout, ContrastReadout):  # ICD, CD: no hooks
            if self.meter.measure_readout is None:
                raise ValueError("this KL meter cannot measure a contrast readout (ICD, CD)")
            kl = dict(self.meter.measure_readout(self.model, reference, intervention.readout))
        else:
            kl = dict(self.meter.measure(self.model, reference, intervention.editor))
        return {**self._score(intervention, part, label), "kl": kl}

    def load_baseline(self, store: Store, model_key: Mapping[str, Any]) -> Baseline:
        """The unedited model's target and control units on both parts (stored)."""
        found: dict[Part, dict[str, Any]] = {}
        for part in ("tune", "report"):
            key = {**model_key, **self.part_key(part, kl=False)}

            def compute(p: Part = part) -> dict[str, Any]:
                return self._score(Intervention(), p, f"unedited {p}")

            found[part] = store.run(f"unedited--{part}", key, compute)
        self.baseline = Baseline(
            found["tune"]["target"],
            found["report"]["target"],
            found["tune"]["control"],
            found["report"]["control"],
        )
        return self.baseline

    def harms(self, measured: Mapping[str, Any]) -> dict[str, float]:
        """A tuning probe's harms against the unedited model."""
        assert self.baseline is not None
        return {
            CONTROL_HARM: control_loss(self.baseline.control_tune, measured["control"]),
            KL_HARM: float(measured["kl"]["kl_mean"]),
            **self.target.harms(measured["target"], self.baseline.tune_target),
        }


def _strength(run: MethodRun, config: Any, alpha: float) -> Intervention:
    """The method configured with ``config`` (at α = 1, once), at strength ``alpha``
    (ICD, CD: the contrast strength β of their readout)."""
    base, _ = run.intervention(config)
    if base.editor is None and isinstance(base.readout, ContrastReadout):
        return Intervention(None, base.readout.with_options(alpha=alpha))
    if base.editor is None:
        raise ValueError(f"{run.spec.name} configures no editor: it has no strength α")
    return Intervention(base.editor.with_options(alpha=alpha), base.readout)


def _tune_method(
    tuner: _Tuner,
    run: MethodRun,
    configs: Sequence[Any],
    budget: Budget,
    interval: tuple[float, float],
) -> MethodTune:
    """Calibrate every configuration, choose the best feasible probe, report it."""
    name, options, target = run.spec.name, tuner.options, tuner.target
    lo, hi = interval
    calibrations: dict[str, Calibration] = {}
    for config, evaluations in zip(
        configs, split_evaluations(options.evaluations, len(configs)), strict=True
    ):
        cid = setting_id(config)

        def evaluate(alpha: float, config: Any = config, cid: str = cid) -> Probe:
            key = {
                **run.key,
                "setting": setting_fields(config),
                "alpha": alpha,
                **tuner.part_key("tune"),
            }

            def compute() -> dict[str, Any]:
                intervention = _strength(run, config, alpha)
                return tuner.measured(intervention, "tune", f"{name} {cid} α={alpha:.4g}")

            measured = run.store.run(f"{cid}--alpha={alpha!r}--tune", key, compute)
            return Probe(target.value(measured["target"]), tuner.harms(measured))

        def told(p: ProbeRecord, cid: str = cid) -> None:
            harms = ", ".join(f"{k} {v:.4g}" for k, v in p.harms.items())
            verdict = "within budget" if p.feasible else f"out ({p.reason})"
            tuner.echo(f"  {name} {cid} α={p.alpha:.4g}: target {p.target:.2f}, {harms}: {verdict}")

        calibrations[cid] = calibrate(evaluate, budget, lo, hi, evaluations, on_probe=told)
    chosen = _choose(calibrations)
    held_out = None
    if chosen is not None:
        config = configs[[setting_id(c) for c in configs].index(chosen)]
        best = calibrations[chosen].best
        assert best is not None
        alpha = best.alpha
        key = {**run.key, "setting": setting_fields(config), "alpha": alpha}
        key.update(tuner.part_key("report"))

        def report() -> dict[str, Any]:
            intervention = _strength(run, config, alpha)
            return tuner.measured(intervention, "report", f"{name} {chosen} held out")

        found = run.store.run(f"{chosen}--alpha={alpha!r}--report", key, report)
        held_out = HeldOut(found["target"], found["control"], found["kl"])
        tuner.echo(f"  {name}: chose {chosen} at α={alpha:.4g}")
    else:
        tuner.echo(f"  {name}: no feasible setting")
    return MethodTune(run.spec.description, interval, calibrations, chosen, held_out)


def _choose(calibrations: Mapping[str, Calibration]) -> str | None:
    """The configuration of the best feasible probe (ties: smaller α, then the earlier
    configuration), or ``None``."""
    candidates = [
        (-c.best.target, c.best.alpha, i, cid)
        for i, (cid, c) in enumerate(calibrations.items())
        if c.best is not None
    ]
    return min(candidates)[3] if candidates else None


def run_tune(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    demos: Sequence[Demonstration],
    target: Target,
    options: TuneOptions,
    out: str | Path,
    *,
    texts: Sequence[str],
    data_dir: str | Path | None = None,
    model_name: str = "",
    demos_source: str = "",
    registry: Mapping[str, MethodSpec[Any]] = METHODS,
    configs: Mapping[str, Sequence[Any]] = TUNE_CONFIGS,
    kl: KLMeter | None = None,
    echo: Callable[[str], None] = print,
    progress: bool = False,
    prompt_format: PromptFormat = PLAIN,
) -> TuneReport:
    """Run the calibration (module docstring); write ``report.json``, ``report.md`` and
    ``pareto.png`` into ``out``; return the report.

    ``prompt_format``: plain prompts or a chat template, for every method's demonstrations
    and every target and control evaluation (KL reads neutral text as it is); in every
    unit's key and in the report.

    ``texts``: at least ``2·options.kl_texts`` neutral texts (the first m tune, the next m
    report; :func:`load_kl_texts`). ``configs``: each method's configurations.
    ``kl``: how KL is measured (default :func:`contract_kl_meter`).

    Raises:
        ValueError: an unknown method or one without configurations, fewer evaluations
            than a method's configurations, too few texts or control items (``2n`` per
            task), or an empty target part.
        FolderInUse: another run holds ``out``.
        OutputError: ``out`` cannot be written.
    """
    check_count("batch_size", options.batch_size)  # before anything runs
    check_count("kl_max_tokens", options.kl_max_tokens)
    with Store(Path(out), echo).exclusive("sea tune"):
        return _run_tune(
            model,
            tokenizer,
            demos,
            target,
            options,
            Path(out),
            texts,
            data_dir,
            model_name,
            demos_source,
            registry,
            configs,
            kl,
            echo,
            progress,
            prompt_format,
        )


def _run_tune(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    demos: Sequence[Demonstration],
    target: Target,
    options: TuneOptions,
    out: Path,
    texts: Sequence[str],
    data_dir: str | Path | None,
    model_name: str,
    demos_source: str,
    registry: Mapping[str, MethodSpec[Any]],
    configs: Mapping[str, Sequence[Any]],
    kl: KLMeter | None,
    echo: Callable[[str], None],
    progress: bool,
    prompt_format: PromptFormat,
) -> TuneReport:
    """:func:`run_tune` in the folder ``out``, which this process holds."""
    m = options.kl_texts
    if len(texts) < 2 * m:
        raise ValueError(f"{2 * m} neutral texts needed (kl_texts={m}), got {len(texts)}")
    if not (target.size("tune") and target.size("report")):
        raise ValueError("the target needs items in both the tuning and the report part")
    skipped = {n: UNTUNABLE[n] for n in options.methods if n in UNTUNABLE}
    names = [n for n in options.methods if n not in UNTUNABLE]
    for name in names:
        if name not in registry:
            raise ValueError(f"unknown method {name!r}; known: {', '.join(registry)}")
        if not configs.get(name):
            raise ValueError(f"no tuning configurations for {name!r}")
        split_evaluations(options.evaluations, len(configs[name]))  # enough evaluations?
    for task in options.control_tasks:  # items [n, 2n) must exist for the report
        count = len(load_control_task(task, data_dir))
        if count < 2 * options.control_limit:
            raise ValueError(
                f"control task {task} has {count} items: control_limit "
                f"{options.control_limit} needs {2 * options.control_limit}"
            )
    meter = kl or contract_kl_meter(options.kl_max_tokens, min(options.batch_size, 8))
    budget = options.budget
    for harm, limit in target.limits:
        budget = budget.with_limit(harm, limit)

    tuner = _Tuner(
        model,
        tokenizer,
        target,
        options,
        {"tune": list(texts[:m]), "report": list(texts[m : 2 * m])},
        meter,
        data_dir,
        echo,
        progress,
        prompt_format,
        control_key=control_data_key(options.control_tasks, data_dir),
    )
    model_id = {"model": model_key(model, model_name)}
    baseline = tuner.load_baseline(Store(out / "baseline", echo), model_id)
    demos_key = options_key({"demos": content_key(demos), **model_id})
    capture_batch = min(options.batch_size, 8)
    shared = SharedActivations(
        Store(out),
        {
            **model_id,
            "demos": demos_key,
            "neutral": options.neutral,
            "batch_size": capture_batch,
            "capture": "all-layers",
            **prompt_format.key(),
        },
    )
    ctx = FitContext(
        model,
        tokenizer,
        demos,
        neutral=options.neutral,
        batch_size=capture_batch,
        seed=options.seed,
        progress=progress,
        prompt_format=prompt_format,
    )
    if any(registry[n].uses_activations for n in names):
        shared.load_into(ctx)
    results: dict[str, MethodTune | MethodFailure] = {}
    for name in names:
        spec = registry[name]
        echo(f"── {name}: {spec.description}")
        units = Store(out / "units" / name, echo)
        method_key = {
            **model_id,
            "demos": demos_key,
            "neutral": options.neutral,
            "batch_size": options.batch_size,
            "seed": options.seed,
            "method": spec.name,
            "description": spec.description,
            **spec.key,
            **prompt_format.key(),
        }
        run = MethodRun(spec, ctx, units, method_key)
        try:
            if spec.uses_activations:
                ctx.activations()
                shared.keep(ctx)
            interval = alpha_range(options, name)
            results[name] = _tune_method(tuner, run, list(configs[name]), budget, interval)
            units.path("error.json").unlink(missing_ok=True)
        except Exception as error:  # noqa: BLE001 - one method's failure must not stop others
            message = f"{type(error).__name__}: {error}"
            echo(f"{name} failed: {message}")
            write_json(
                units.path("error.json"), {"error": message, "traceback": traceback.format_exc()}
            )
            results[name] = MethodFailure(message)
        shared.keep(ctx)
    report = TuneReport(
        shareable_name(model_name),
        options,
        budget,
        target.name,
        target.headline,
        target.gain_metric,
        {"tune": target.size("tune"), "report": target.size("report")},
        baseline,
        target.value(baseline.tune_target),
        results,
        skipped,
        demos_source,
        prompt_format.record(),
    )
    report.write(out, echo)
    return report
