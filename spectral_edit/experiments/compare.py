"""``sea compare``: every method on the same demonstrations and the same questions, tuned
with the same budget under the 2-fold protocol, in one report.

Protocol. Every setting of a method's grid (:mod:`spectral_edit.experiments.methods`) is
scored on the TruthfulQA questions of fold 1 (the folds are cut to the same size by the
caller); the setting with the best mean of MC1 and MC2 there is reported on fold 2, so no
reported question was used to choose its own setting. With ``both_directions`` the
reverse is run too (tune on fold 2, report on fold 1) and the headline is the
question-weighted average of the two held-out results. The selected settings are then
run on the control tasks and the harm measures (KL on neutral text, free generation:
:mod:`spectral_edit.evaluate.harm`, against one unedited reference per run), and the first
direction's choice is timed against the unedited model
(:mod:`spectral_edit.experiments.overhead`).

Persistence is the protocol's, in the one store (:mod:`spectral_edit.experiments.store`):
the shared activations (``out/activations.safetensors``), each method's prepared editor
(``out/units/<method>/prepared.safetensors``) and every unit of work (one setting on one
fold, one control run, one timing: ``out/units/<method>/<setting>--<unit>.json``), each
under the key of what produced it; a rerun skips what is done. The keys are by content
(:func:`~.store.model_key` of the model's weights, the demonstrations, the questions, the
control items and neutral texts read), never a local path; the run holds the folder
(:meth:`~.store.Store.exclusive`), so a second run into it is refused. A method that
fails is reported with its error (``error.json``), and the others go on.
"""

from __future__ import annotations

import functools
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from ..core.options import check_count, check_limit
from ..data.control import load_control_task
from ..data.truthfulqa import MCQuestion
from ..demos.activations import DemoActivations
from ..demos.format import Demonstration
from ..demos.prompts import PLAIN, PromptFormat
from ..evaluate.control import evaluate_control
from ..evaluate.harm import HarmReference, build_harm_reference, evaluate_harm, harm_prompts
from ..evaluate.harm import neutral_texts as load_neutral_texts
from ..evaluate.truthfulqa import evaluate_truthfulqa
from ..util.identity import shareable_name
from ..util.report import write_json
from .compare_report import CompareReport
from .compare_results import (
    HARM_OPTIONS,
    CompareOptions,
    ControlRun,
    HarmRun,
    MethodFailure,
    MethodResult,
    Unit,
)
from .folds import DIRECTIONS, Direction, best_on_fold
from .methods import METHODS, FitContext, Intervention, MethodSpec
from .overhead import OverheadTiming, measure_overhead, tokens_processed
from .settings import setting_fields, setting_id
from .store import Store, content_key, model_key, options_key

ACTIVATIONS = "activations"
PREPARED = "prepared"
HARM_SAMPLES = 3
"""Generations kept per harm unit (side by side in the report)."""
READOUT_ONLY = frozenset({"dola", "icd", "cd"})
"""Methods that change only the scorer's readout: no hooks to generate with, so no harm
measures (KL and free generation) in the comparison."""


def control_data_key(tasks: Sequence[str], data_dir: str | Path | None) -> str:
    """What control-task units read, by content: every item of each task's file (file
    order), so another data folder with other items recomputes and the same items in
    another place do not."""
    return options_key({task: content_key(load_control_task(task, data_dir)) for task in tasks})


@dataclass
class _HarmBaseline:
    """The unedited side of the harm measures, built on first use and shared by every
    method of a run (:func:`~spectral_edit.evaluate.harm.build_harm_reference`)."""

    ctx: FitContext
    options: CompareOptions
    data_dir: str | Path | None
    progress: bool
    questions: Sequence[str] = ()
    built: HarmReference | None = None

    @functools.cached_property
    def texts(self) -> list[str]:
        """The neutral texts of the KL (read once)."""
        return load_neutral_texts(self.data_dir, limit=self.options.harm_texts)

    @property
    def key(self) -> dict[str, Any]:
        """What the harm units depend on besides the setting (the texts by content)."""
        return {k: getattr(self.options, k) for k in HARM_OPTIONS} | {
            "texts": content_key(self.texts),
            "questions": list(self.questions),
        }

    def reference(self) -> HarmReference:
        if self.built is None:
            o = self.options
            self.built = build_harm_reference(
                self.ctx.model,
                self.ctx.tokenizer,
                texts=self.texts,
                prompts=harm_prompts(self.questions, prompt_format=self.ctx.prompt_format),
                max_tokens=o.harm_max_tokens,
                gen_tokens=o.harm_gen_tokens,
                batch_size=min(o.batch_size, 8),
                progress="harm reference" if self.progress else False,
            )
        return self.built


@dataclass
class MethodRun:
    """One method under the protocol: its lazily prepared state, its configured settings
    and its units, stored in ``store`` under keys extending ``key``."""

    spec: MethodSpec[Any]
    ctx: FitContext
    store: Store
    key: Mapping[str, Any]
    state: Any = None
    prepared: bool = False
    prepare_seconds: float = 0.0
    configured: dict[str, tuple[Intervention, float]] = field(default_factory=dict)
    units: dict[str, dict[int, Unit]] = field(default_factory=dict)

    def _prepare(self) -> None:
        """Prepare the state, or load it where an earlier run stored it for this key."""
        filename = f"{PREPARED}.safetensors"
        load = self.spec.load_state
        found = (
            None if load is None else self.store.get_artifact(PREPARED, self.key, filename, load)
        )
        if found is not None:
            self.state, record = found
            self.prepare_seconds = float(record["seconds"])
        else:
            started = time.perf_counter()
            self.state = self.spec.prepare(self.ctx)
            self.prepare_seconds = time.perf_counter() - started
            if load is not None:
                record = {"seconds": self.prepare_seconds}
                self.store.put_artifact(PREPARED, self.key, filename, self.state.save, record)
        self.prepared = True

    def intervention(self, setting: Any) -> tuple[Intervention, float]:
        """The configured intervention and the seconds configuring it took."""
        sid = setting_id(setting)
        if sid not in self.configured:
            if not self.prepared:
                self._prepare()
            started = time.perf_counter()
            intervention = self.spec.configure(self.state, setting, self.ctx)
            self.configured[sid] = (intervention, time.perf_counter() - started)
        return self.configured[sid]

    def _unit_key(self, setting: Any, **more: Any) -> dict[str, Any]:
        return {**self.key, "setting": setting_fields(setting), **more}

    def scored(
        self,
        setting: Any,
        fold: int,
        questions: Sequence[MCQuestion],
        options: CompareOptions,
        progress: bool,
    ) -> Unit:
        """The stored (or now computed) TruthfulQA unit of ``setting`` on ``fold``."""
        sid = setting_id(setting)
        label = f"{self.spec.name} {sid} fold {fold}" if progress else False
        model, tokenizer = self.ctx.model, self.ctx.tokenizer

        def evaluate() -> dict[str, Any]:
            intervention, configure_seconds = self.intervention(setting)
            with intervention.applied(model):
                result = evaluate_truthfulqa(
                    model,
                    tokenizer,
                    questions,
                    batch_size=options.batch_size,
                    readout=intervention.readout,
                    progress=label,
                    prompt_format=self.ctx.prompt_format,
                )
            uses = self.spec.uses_activations
            return Unit(
                setting_fields(setting),
                result.summary,
                self.prepare_seconds,
                configure_seconds,
                self.ctx.capture_seconds if uses else 0.0,
                [{k: r[k] for k in ("mc1", "mc2", "mc3")} for r in result.per_question],
            ).to_json()

        key = self._unit_key(setting, questions=content_key(questions))
        unit = Unit.from_json(self.store.run(f"{sid}--truthfulqa-fold{fold}", key, evaluate))
        self.units.setdefault(sid, {})[fold] = unit
        return unit

    def control(
        self, setting: Any, options: CompareOptions, data_dir: str | Path | None, progress: bool
    ) -> ControlRun:
        """The stored (or now computed) control-task run of ``setting``."""
        model, tokenizer = self.ctx.model, self.ctx.tokenizer

        def run_control() -> dict[str, Any]:
            intervention, _ = self.intervention(setting)
            with intervention.applied(model):
                result = evaluate_control(
                    model,
                    tokenizer,
                    list(options.control_tasks),
                    data_dir=data_dir,
                    limit=options.control_limit,
                    batch_size=options.batch_size,
                    readout=intervention.readout,
                    progress=progress,
                    prompt_format=self.ctx.prompt_format,
                )
            return result.summary

        control = control_data_key(options.control_tasks, data_dir)
        key = self._unit_key(setting, control=control)
        return self.store.run(f"{setting_id(setting)}--control", key, run_control)

    def harm(self, setting: Any, baseline: _HarmBaseline) -> HarmRun:
        """The stored (or now measured) harm of ``setting``: KL on the neutral texts and
        the free generations, against the run's unedited reference."""

        def measure() -> dict[str, Any]:
            intervention, _ = self.intervention(setting)
            result = evaluate_harm(
                self.ctx.model, self.ctx.tokenizer, intervention.editor, baseline.reference()
            )
            samples = [
                {k: r[k] for k in ("kind", "prompt", "unedited", "edited")}
                for r in result.records[:HARM_SAMPLES]
            ]
            return {"summary": result.summary, "samples": samples}

        key = self._unit_key(setting, harm=baseline.key)
        return self.store.run(f"{setting_id(setting)}--harm", key, measure)

    def overhead(
        self, setting: Any, questions: Sequence[MCQuestion], batch_size: int
    ) -> OverheadTiming:
        """The stored (or now measured) overhead timing of ``setting`` on ``questions``."""

        def measure() -> dict[str, Any]:
            intervention, _ = self.intervention(setting)
            timing = measure_overhead(
                self.ctx.model,
                self.ctx.tokenizer,
                intervention,
                questions,
                batch_size,
                self.ctx.prompt_format,
            )
            return timing.to_json()

        key = self._unit_key(setting, questions=content_key(questions))
        name = f"{setting_id(setting)}--overhead"
        return OverheadTiming.from_json(self.store.run(name, key, measure))


@dataclass
class SharedActivations:
    """The demonstrations' activations at every layer, shared by the methods and stored
    once (``activations.safetensors``, with the seconds the capture took)."""

    store: Store
    key: Mapping[str, Any]
    kept: bool = False

    def load_into(self, ctx: FitContext) -> None:
        """Give ``ctx`` the stored activations, where an earlier run kept them."""
        found = self.store.get_tensors(ACTIVATIONS, self.key)
        if found is not None:
            tensors, metadata = found
            layers = tuple(range(tensors["positive"].shape[1]))
            ctx.captured = DemoActivations(**tensors, layers=layers)
            ctx.capture_seconds = float(metadata.get("seconds", 0.0))
            self.kept = True

    def keep(self, ctx: FitContext) -> None:
        """Store ``ctx``'s activations if it captured them and they are not stored yet."""
        acts = ctx.captured
        if self.kept or acts is None:
            return
        tensors = {"neutral": acts.neutral, "positive": acts.positive, "negative": acts.negative}
        metadata = {"seconds": repr(ctx.capture_seconds)}
        self.store.put_tensors(ACTIVATIONS, self.key, tensors, metadata)
        self.kept = True


def run_compare(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    demos: Sequence[Demonstration],
    folds: Mapping[int, Sequence[MCQuestion]],
    options: CompareOptions,
    out: str | Path,
    *,
    data_dir: str | Path | None = None,
    model_name: str = "",
    registry: Mapping[str, MethodSpec[Any]] = METHODS,
    echo: Callable[[str], None] = print,
    progress: bool = False,
    prompt_format: PromptFormat = PLAIN,
) -> CompareReport:
    """Run the comparison; write ``report.json``, ``report.md`` and the plot into ``out``.

    ``folds``: the TruthfulQA questions of fold 1 and fold 2 (already cut to size).
    ``prompt_format``: plain prompts or a chat template, for every method's
    demonstrations and every evaluation alike (in every unit's key and in the report).
    ``echo``: where the progress messages go. Returns the report.

    Raises:
        FolderInUse: another run holds ``out``.
        OutputError: ``out`` cannot be written.
        ValueError: a batch size or control limit below 1, or an empty fold (before
            anything runs).
    """
    check_count("batch_size", options.batch_size)
    check_limit("control_limit", options.control_limit)
    if set(folds) != {1, 2} or not all(folds.values()):
        raise ValueError("the comparison needs questions in both fold 1 and fold 2")
    with Store(Path(out)).exclusive("sea compare"):
        return _run_compare(
            model,
            tokenizer,
            demos,
            folds,
            options,
            Path(out),
            data_dir,
            model_name,
            registry,
            echo,
            progress,
            prompt_format,
        )


def _run_compare(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    demos: Sequence[Demonstration],
    folds: Mapping[int, Sequence[MCQuestion]],
    options: CompareOptions,
    out: Path,
    data_dir: str | Path | None,
    model_name: str,
    registry: Mapping[str, MethodSpec[Any]],
    echo: Callable[[str], None],
    progress: bool,
    prompt_format: PromptFormat,
) -> CompareReport:
    """:func:`run_compare` in the folder ``out``, which this process holds."""
    demos_key = options_key({"demos": content_key(demos), "model": model_key(model, model_name)})
    # a unit's result does not depend on which methods run or on the directions asked for
    chosen = {
        k: v
        for k, v in asdict(options).items()
        if k not in ("both_directions", "overhead_questions", *HARM_OPTIONS)
    }
    base_key = {**chosen, "demos": demos_key, "methods": None, **prompt_format.key()}
    shared = SharedActivations(Store(out), {**base_key, "capture": "all-layers"})
    ctx = FitContext(
        model,
        tokenizer,
        demos,
        neutral=options.neutral,
        batch_size=min(options.batch_size, 8),
        seed=options.seed,
        progress=progress,
        prompt_format=prompt_format,
    )
    if any(registry[name].uses_activations for name in options.methods):
        shared.load_into(ctx)
    # the QA prompts of the free generations: the first held-out questions
    qa = [q.question for q in folds[2][: options.harm_qa_prompts]]
    baseline = _HarmBaseline(ctx, options, data_dir, progress, qa)
    methods: dict[str, MethodResult | MethodFailure] = {}
    for name in options.methods:
        spec = registry[name]
        echo(f"── {name}: {spec.description}")
        units = Store(out / "units" / name, echo)
        method_key = {
            **base_key,
            "method": spec.name,
            "description": spec.description,
            **spec.key,
        }
        run = MethodRun(spec, ctx, units, method_key)
        try:
            if spec.uses_activations:  # capture (and keep) them before anything else
                ctx.activations()
                shared.keep(ctx)
            methods[name] = _run_method(run, folds, options, data_dir, progress, baseline)
        except Exception as error:  # noqa: BLE001 - one method's failure must not stop others
            message = f"{type(error).__name__}: {error}"
            echo(f"{name} failed: {message}")
            write_json(
                units.path("error.json"), {"error": message, "traceback": traceback.format_exc()}
            )
            methods[name] = MethodFailure(message)
        shared.keep(ctx)  # where another method captured them on its own
    sizes = {f: len(q) for f, q in folds.items()}
    tokens = {fold: tokens_processed(tokenizer, qs, prompt_format) for fold, qs in folds.items()}
    report = CompareReport(
        shareable_name(model_name),
        options,
        sizes,
        tokens,
        methods,
        ctx.capture_seconds,
        prompt_format.record(),
    )
    report.write(out, echo)
    return report


def tune_on_folds(
    run: MethodRun,
    folds: Mapping[int, Sequence[MCQuestion]],
    options: CompareOptions,
    progress: bool,
    grid: Sequence[Any] | None = None,
) -> dict[Direction, Any]:
    """The 2-fold protocol's TruthfulQA part for one method: per direction (fold 1 → 2, and
    the reverse with ``options.both_directions``) every setting of ``grid`` (default the
    method's) scored on the tuning fold, and the best (:func:`~.folds.best_on_fold`)
    scored on the test fold; the units land in ``run.units``. Returns the selections."""
    grid = run.spec.grid if grid is None else grid
    run.units = {setting_id(s): {} for s in grid}
    selections: dict[Direction, Any] = {}
    for direction in DIRECTIONS if options.both_directions else DIRECTIONS[:1]:

        def on_tuning_fold(setting: Any, d: Direction = direction) -> Mapping[str, Any]:
            return run.scored(setting, d.tune, folds[d.tune], options, progress).summary

        best = best_on_fold(grid, on_tuning_fold)
        run.scored(best, direction.test, folds[direction.test], options, progress)
        selections[direction] = best
    return selections


def _run_method(
    run: MethodRun,
    folds: Mapping[int, Sequence[MCQuestion]],
    options: CompareOptions,
    data_dir: str | Path | None,
    progress: bool,
    baseline: _HarmBaseline,
) -> MethodResult:
    """The protocol for one method: tune, report, control runs, harm measures (where
    ``options.harm_texts``; the readout-only methods of :data:`READOUT_ONLY` have no hooks
    to generate with and are skipped), overhead timing."""
    selections = tune_on_folds(run, folds, options, progress)
    chosen = {setting_id(s): s for s in selections.values()}
    control = {sid: run.control(s, options, data_dir, progress) for sid, s in chosen.items()}
    harm = None
    if options.harm_texts and run.spec.name not in READOUT_ONLY:
        harm = {sid: run.harm(s, baseline) for sid, s in chosen.items()}
    primary = selections[DIRECTIONS[0]]
    overhead = run.overhead(primary, folds[2][: options.overhead_questions], options.batch_size)
    run.store.path("error.json").unlink(missing_ok=True)
    return MethodResult(
        run.spec.description,
        run.units,
        {d: setting_id(s) for d, s in selections.items()},
        control,
        overhead,
        harm,
    )
