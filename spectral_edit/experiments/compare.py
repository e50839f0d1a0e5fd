"""``sea compare``: every method on the same demonstrations and the same questions, tuned
with the same budget under the 2-fold protocol, in one report.

Protocol. Every setting of a method's grid (:mod:`spectral_edit.experiments.methods`) is scored on
the TruthfulQA questions of fold 1 (the folds are cut to the same size by the caller);
the setting with the best mean of MC1 and MC2 there is reported on fold 2, so no reported
question was used to choose its own setting. With ``both_directions`` the reverse is run
too (tune on fold 2, report on fold 1) and the headline is the question-weighted average
of the two held-out results. The selected settings are then run on the control tasks.

Every unit of work (one setting on one fold, one control run) is stored atomically under
``out/units/<method>/`` with the options that produced it; a rerun skips what is done.
A method that fails is reported with its error, and the others go on.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..data.control import DEFAULT_CONTROL_TASKS
from ..data.truthfulqa import QA_PRIMER, MCQuestion
from ..demos.format import DemoActivations, Demonstration
from ..demos.prompts import qa_prompt
from ..evaluate.control import evaluate_control
from ..evaluate.metrics import tuning_criterion
from ..evaluate.truthfulqa import evaluate_truthfulqa
from ..hf.tokens import encode, encode_pair
from ..util.atomic import atomic_path, atomic_write_text
from ..util.report import fmt, markdown_table, print_table, read_json, write_json
from .jobs import StageStore, options_key
from .methods import METHODS, FitContext, Intervention, MethodSpec, setting_id


@dataclass(frozen=True)
class CompareOptions:
    """What a comparison is run with (all of it goes into the stored units' keys)."""

    methods: tuple[str, ...]
    control_tasks: tuple[str, ...] = DEFAULT_CONTROL_TASKS
    control_limit: int | None = 50
    neutral: str = "generate"
    batch_size: int = 16
    seed: int = 0
    both_directions: bool = False
    overhead_questions: int = 10


DIRECTIONS = ((1, 2), (2, 1))
"""(tuning fold, reported fold): fold 1 → fold 2 always; the reverse on request."""


@dataclass
class _MethodRun:
    """One method's lazily prepared state and configured settings."""

    spec: MethodSpec
    ctx: FitContext
    folder: Path
    state_key: str = ""
    state: Any = None
    prepared: bool = False
    prepare_seconds: float = 0.0
    configured: dict[str, tuple[Intervention, float]] = field(default_factory=dict)

    def _prepare(self) -> None:
        """Prepare the state, or load it where an earlier run saved it for this key."""
        path, meta = self.folder / "prepared.safetensors", self.folder / "prepared.json"
        saved = read_json(meta) if meta.is_file() else None
        if (
            self.spec.load_state is not None
            and path.is_file()
            and isinstance(saved, dict)
            and saved.get("key") == self.state_key
        ):
            self.state = self.spec.load_state(path)
            self.prepare_seconds = float(saved["seconds"])
        else:
            started = time.perf_counter()
            self.state = self.spec.prepare(self.ctx)
            self.prepare_seconds = time.perf_counter() - started
            if self.spec.load_state is not None:
                self.state.save(path)
                write_json(meta, {"key": self.state_key, "seconds": self.prepare_seconds})
        self.prepared = True

    def intervention(self, setting: Mapping[str, Any]) -> tuple[Intervention, float]:
        """The configured intervention and the seconds configuring it took."""
        sid = setting_id(setting)
        if sid not in self.configured:
            if not self.prepared:
                self._prepare()
            started = time.perf_counter()
            intervention = self.spec.configure(self.state, setting, self.ctx)
            self.configured[sid] = (intervention, time.perf_counter() - started)
        return self.configured[sid]


def tokens_processed(tokenizer: PreTrainedTokenizerBase, questions: Sequence[MCQuestion]) -> int:
    """Tokens the scorer runs for these questions beyond the shared primer: each
    question's own context tokens once, plus every answer's tokens."""
    primer = len(encode(tokenizer, QA_PRIMER))
    total = 0
    for q in questions:
        prompt = qa_prompt(q.question)
        answers = dict.fromkeys((*q.mc1_answers, *q.mc2_answers))
        context, _ = encode_pair(tokenizer, prompt, " x")
        total += max(len(context) - primer, 0)
        total += sum(len(encode_pair(tokenizer, prompt, " " + a)[1]) for a in answers)
    return total


def _activation_cache(out: Path, key: str) -> tuple[Any, Any]:
    """Load/save functions for the shared demonstration activations (safetensors)."""
    path = out / "activations.safetensors"

    def load() -> tuple[DemoActivations, float] | None:
        if not path.is_file():
            return None
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("key") != key:
                return None
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        layers = tuple(range(tensors["positive"].shape[1]))
        return DemoActivations(**tensors, layers=layers), float(metadata.get("seconds", 0.0))

    def save(acts: DemoActivations, seconds: float) -> None:
        tensors = {"neutral": acts.neutral, "positive": acts.positive, "negative": acts.negative}
        metadata = {"key": key, "seconds": repr(seconds)}
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata)

    return load, save


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
    registry: Mapping[str, MethodSpec] = METHODS,
    console: Console | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the comparison; write ``report.json``, ``report.md`` and the plot into ``out``.

    ``folds``: the TruthfulQA questions of fold 1 and fold 2 (already cut to size).
    Returns the report dictionary.
    """
    console = console or Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if set(folds) != {1, 2} or not all(folds.values()):
        raise ValueError("the comparison needs questions in both fold 1 and fold 2")
    demos_key = options_key({"demos": [asdict(d) for d in demos], "model": model_name})
    # a unit's result does not depend on which methods run or on the directions asked for
    chosen = {
        k: v
        for k, v in asdict(options).items()
        if k not in ("both_directions", "overhead_questions")
    }
    base_key = {**chosen, "demos": demos_key, "methods": None}
    load, save = _activation_cache(out, options_key({**base_key, "capture": "all-layers"}))
    ctx = FitContext(
        model,
        tokenizer,
        demos,
        neutral=options.neutral,
        batch_size=min(options.batch_size, 8),
        seed=options.seed,
        progress=progress,
        activations_loader=load,
        activations_saver=save,
    )
    tokens = {fold: tokens_processed(tokenizer, qs) for fold, qs in folds.items()}
    fold_keys = {fold: [q.question for q in qs] for fold, qs in folds.items()}
    methods: dict[str, Any] = {}
    for name in options.methods:
        spec = registry[name]
        console.rule(f"[bold]{name}[/bold]: {spec.description}")
        run = _MethodRun(spec, ctx, out / "units" / name)
        try:
            methods[name] = _run_method(
                run, folds, fold_keys, options, base_key, data_dir, console, progress
            )
        except Exception as error:  # noqa: BLE001 - one method's failure must not stop others
            message = f"{type(error).__name__}: {error}"
            console.print(f"[red]{name} failed:[/red] {message}")
            write_json(
                run.folder / "error.json", {"error": message, "traceback": traceback.format_exc()}
            )
            methods[name] = {"error": message}
    report = _report(methods, options, tokens, {f: len(q) for f, q in folds.items()}, model_name)
    report["capture_seconds"] = ctx.capture_seconds
    write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render_markdown(report))
    if any("error" not in m for m in methods.values()):
        plot_report(report, out / "truthfulness_vs_control.png")
    _print_summary(report, console)
    return report


def _run_method(
    run: _MethodRun,
    folds: Mapping[int, Sequence[MCQuestion]],
    fold_keys: Mapping[int, list[str]],
    options: CompareOptions,
    base_key: Mapping[str, Any],
    data_dir: str | Path | None,
    console: Console,
    progress: bool,
) -> dict[str, Any]:
    model, tokenizer = run.ctx.model, run.ctx.tokenizer
    store = StageStore(run.folder, console)
    method_key = {**base_key, "method": run.spec.name, "description": run.spec.description}
    run.state_key = options_key(method_key)
    units: dict[str, dict[int, dict[str, Any]]] = {setting_id(s): {} for s in run.spec.grid}

    def scored(setting: Mapping[str, Any], fold: int) -> dict[str, Any]:
        """The stored (or now computed) TruthfulQA unit of ``setting`` on ``fold``."""
        sid = setting_id(setting)
        label = f"{run.spec.name} {sid} fold {fold}" if progress else False

        def evaluate() -> dict[str, Any]:
            intervention, configure_seconds = run.intervention(setting)
            with intervention.applied(model):
                result = evaluate_truthfulqa(
                    model,
                    tokenizer,
                    folds[fold],
                    batch_size=options.batch_size,
                    readout=intervention.readout,
                    progress=label,
                )
            return {
                "setting": dict(setting),
                "summary": result.summary,
                "prepare_seconds": run.prepare_seconds,
                "configure_seconds": configure_seconds,
                "capture_seconds": run.ctx.capture_seconds if run.spec.uses_activations else 0.0,
                "per_question": [
                    {k: r[k] for k in ("mc1", "mc2", "mc3")} for r in result.per_question
                ],
            }

        key = {**method_key, "setting": dict(setting), "questions": fold_keys[fold]}
        units[sid][fold] = store.run(f"{sid}--truthfulqa-fold{fold}", key, evaluate)
        return units[sid][fold]

    selections = {}
    for tune, test in DIRECTIONS if options.both_directions else DIRECTIONS[:1]:
        tuned = {setting_id(s): tuning_criterion(scored(s, tune)["summary"]) for s in run.spec.grid}
        chosen = max(run.spec.grid, key=lambda s, tuned=tuned: tuned[setting_id(s)])
        # max keeps the first of equals: grid order breaks ties
        scored(chosen, test)
        selections[f"fold{tune}->fold{test}"] = setting_id(chosen)
    control = {}
    for sid in dict.fromkeys(selections.values()):
        setting = next(s for s in run.spec.grid if setting_id(s) == sid)

        def run_control(setting=setting) -> dict[str, Any]:
            intervention, _ = run.intervention(setting)
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
                )
            return {k: v for k, v in result.items() if k != "per_item"}

        key = {**method_key, "setting": dict(setting), "data_dir": str(data_dir)}
        control[sid] = store.run(f"{sid}--control", key, run_control)
    primary = next(s for s in run.spec.grid if setting_id(s) == selections["fold1->fold2"])
    timing_questions = folds[2][: options.overhead_questions]
    key = {
        **method_key,
        "setting": dict(primary),
        "questions": [q.question for q in timing_questions],
    }
    overhead = store.run(
        f"{setting_id(primary)}--overhead",
        key,
        lambda: _measure_overhead(run, primary, timing_questions, options.batch_size),
    )
    (run.folder / "error.json").unlink(missing_ok=True)
    return {
        "description": run.spec.description,
        "units": units,
        "selections": selections,
        "control": control,
        "overhead": overhead,
    }


OVERHEAD_REPEATS = 2


def _measure_overhead(
    run: _MethodRun, setting: Mapping[str, Any], questions: Sequence[MCQuestion], batch_size: int
) -> dict[str, Any]:
    """Scoring time of ``questions`` unedited and under the method, back to back in one
    process (the fastest of :data:`OVERHEAD_REPEATS` runs each), and the tokens scored."""
    model, tokenizer = run.ctx.model, run.ctx.tokenizer
    intervention, _ = run.intervention(setting)

    def timed(chosen: Intervention) -> float:
        started = time.perf_counter()
        with chosen.applied(model):
            evaluate_truthfulqa(
                model, tokenizer, questions, batch_size=batch_size, readout=chosen.readout
            )
        return time.perf_counter() - started

    plain, edited = [], []
    for _ in range(OVERHEAD_REPEATS):
        plain.append(timed(Intervention()))
        edited.append(timed(intervention))
    return {
        "questions": len(questions),
        "tokens": tokens_processed(tokenizer, questions),
        "seconds_unedited": min(plain),
        "seconds_method": min(edited),
    }


def _report(
    methods: Mapping[str, Any],
    options: CompareOptions,
    tokens: Mapping[int, int],
    sizes: Mapping[int, int],
    model_name: str,
) -> dict[str, Any]:
    """Held-out figures per method, and overheads against ``none`` where it ran."""
    rows: dict[str, Any] = {}
    for name, result in methods.items():
        if "error" in result:
            rows[name] = {"error": result["error"]}
            continue
        held_out, seconds, fit_seconds, controls = [], 0.0, [], []
        for direction, sid in result["selections"].items():
            test = int(direction[-1])
            unit = result["units"][sid][test]
            held_out.append((sizes[test], unit["summary"]))
            seconds += unit["summary"]["seconds"]
            fit_seconds.append(
                unit["prepare_seconds"] + unit["configure_seconds"] + unit["capture_seconds"]
            )
            controls.append(result["control"][sid])
        total = sum(n for n, _ in held_out)
        metrics = {m: sum(n * s[m] for n, s in held_out) / total for m in ("mc1", "mc2", "mc3")}
        task_names = [t for t in options.control_tasks if "acc" in controls[0]["tasks"][t]]
        per_task = {
            t: sum(c["tasks"][t]["acc"] for c in controls) / len(controls) for t in task_names
        }
        averages = [c["average"]["acc"] for c in controls if c["average"]["acc"] is not None]
        rows[name] = {
            **metrics,
            "selections": result["selections"],
            "control_average": sum(averages) / len(averages) if averages else None,
            "control_tasks": per_task,
            "control_skipped": {
                t: controls[0]["tasks"][t]["skipped"]
                for t in options.control_tasks
                if "skipped" in controls[0]["tasks"][t]
            },
            "fit_seconds": max(fit_seconds),
            "eval_seconds": seconds,
            "control_seconds": sum(c["seconds"] for c in controls),
            **_overhead_figures(result["overhead"]),
            "tuning": {
                sid: {f"fold{f}": u["summary"] for f, u in by_fold.items()}
                for sid, by_fold in result["units"].items()
            },
        }
    return {
        "model": model_name,
        "options": asdict(options),
        "questions": {f"fold{f}": n for f, n in sizes.items()},
        "tokens_scored": dict(tokens),
        "methods": rows,
    }


def _overhead_figures(timing: Mapping[str, Any]) -> dict[str, float]:
    """Extra milliseconds per scored token and percent, method against unedited."""
    extra = timing["seconds_method"] - timing["seconds_unedited"]
    return {
        "overhead_ms_per_token": 1000 * extra / timing["tokens"],
        "overhead_percent": 100 * extra / timing["seconds_unedited"],
        "overhead_tokens": timing["tokens"],
    }


HEADERS = [
    "method",
    "MC1",
    "MC2",
    "MC3",
    "control avg",
    "fit s",
    "eval s",
    "overhead ms/tok",
    "overhead %",
]


def _table_rows(report: Mapping[str, Any]) -> list[list[Any]]:
    rows = []
    for name, row in report["methods"].items():
        if "error" in row:
            rows.append([name, f"failed: {row['error']}", *[""] * (len(HEADERS) - 2)])
            continue
        rows.append(
            [
                name,
                row["mc1"],
                row["mc2"],
                row["mc3"],
                row["control_average"],
                row["fit_seconds"],
                row["eval_seconds"],
                row["overhead_ms_per_token"],
                row["overhead_percent"],
            ]
        )
    return rows


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: headline table, chosen settings, control tasks, tuning."""
    q = report["questions"]
    lines = [
        f"# Method comparison: {report['model']}",
        "",
        "TruthfulQA MC1/MC2/MC3 (percent) on held-out questions: each method's setting is "
        f"chosen on fold 1 ({q['fold1']} questions) and scored on fold 2 ({q['fold2']})"
        + (", and the reverse, averaged" if report["options"]["both_directions"] else "")
        + ". Control: mean accuracy over the multiple-choice control tasks "
        f"({report['options']['control_limit'] or 'all'} items each) of the selected "
        "settings. Fit s: capture, fitting or training from the demonstrations. Eval s: "
        "TruthfulQA scoring time of the held-out run(s). Overhead: extra scoring time per "
        "token against the unedited model, both timed back to back on the first "
        f"{report['options']['overhead_questions']} held-out questions (fastest of "
        f"{OVERHEAD_REPEATS}); `none` shows the timing noise.",
        "",
        markdown_table(HEADERS, _table_rows(report)),
        "## Selected settings",
        "",
        markdown_table(
            ["method", "chosen on fold 1", "chosen on fold 2"],
            [
                [name, row["selections"]["fold1->fold2"], row["selections"].get("fold2->fold1")]
                for name, row in report["methods"].items()
                if "error" not in row
            ],
        ),
    ]
    ok = {n: r for n, r in report["methods"].items() if "error" not in r}
    if ok:
        tasks = list(next(iter(ok.values()))["control_tasks"])
        lines += [
            "## Control tasks (accuracy, percent)",
            "",
            markdown_table(
                ["method", *tasks],
                [[n, *(r["control_tasks"][t] for t in tasks)] for n, r in ok.items()],
            ),
        ]
        skipped = {n: r["control_skipped"] for n, r in ok.items() if r["control_skipped"]}
        for name, tasks_skipped in skipped.items():
            for task, why in tasks_skipped.items():
                lines.append(f"- {name}: {task} skipped ({why})")
        lines += ["", "## Tuning (every setting scored: MC1 / MC2)", ""]
        tuning_rows = []
        for name, row in ok.items():
            for sid, by_fold in row["tuning"].items():
                cells = [
                    f"{fmt(s['mc1'])} / {fmt(s['mc2'])}" if s else None
                    for s in (by_fold.get(f"fold{f}") for f in (1, 2))
                ]
                tuning_rows.append([name, sid, *cells])
        lines.append(markdown_table(["method", "setting", "fold 1", "fold 2"], tuning_rows))
    return "\n".join(lines) + "\n"


def plot_report(report: Mapping[str, Any], path: str | Path) -> Path:
    """Scatter of TruthfulQA MC2 against control-task accuracy, one point per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, row in report["methods"].items():
        if "error" in row or row["control_average"] is None:
            continue
        marker = "s" if name == "none" else "o"
        ax.scatter(row["control_average"], row["mc2"], marker=marker, s=40)
        ax.annotate(
            name,
            (row["control_average"], row["mc2"]),
            xytext=(4, 4),
            textcoords="offset points",
            fontsize=8,
        )
    ax.set_xlabel("control tasks: mean accuracy (%)")
    ax.set_ylabel("TruthfulQA MC2, held-out folds (%)")
    ax.set_title(f"Truthfulness vs. general ability: {report['model']}", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)
    return path


def _print_summary(report: Mapping[str, Any], console: Console) -> None:
    print_table("held-out TruthfulQA and control tasks", HEADERS, _table_rows(report), console)
