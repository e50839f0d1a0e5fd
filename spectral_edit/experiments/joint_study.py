"""The joint-vs-specialised study (issue #15): one SEA editor fitted on pooled truthfulness
and bias demonstrations, against the two specialised editors, alone and composed.

Demonstrations: ``n_truth`` HaluEval QA ones (the paper's truthfulness source, seed 44:
:func:`~.demo_job.load_truthfulness_demos`, without the hand-written fallback) and
``n_bias`` BBQ ones (disambiguated items, :func:`~spectral_edit.data.splits.bbq_split`
with ``seed``, :func:`~spectral_edit.demos.builders.bbq_demos`).

Editors: *truthfulness* (``truth`` options, on the HaluEval demonstrations), *bias*
(``bias`` options, on the BBQ ones; default method.md's Φ-SEA squared-exponential on the
last 2 layers), *joint* (``joint`` options, default the truthfulness ones, on both sets
pooled) and *composed*: truthfulness then bias, one
:class:`~spectral_edit.editors.composition.ComposedEditor`.

Scored, each with no editor and under each editor: TruthfulQA MC1/MC2 on the first
``tqa_limit`` questions of ``mc_file`` (all held out: no TruthfulQA item is a
demonstration) and BBQ on ``bbq_limit`` held-out items (a seeded sample of the items whose
templates gave no demonstration). Accuracy is pooled over both context conditions, and
given per condition, with the bias score (ambiguous contexts) and stereotype rate.

Stages in the one resumable store (:mod:`.store`, the folder held for the run): the
activations of each demonstration set (captured once at the union of the editors'
layers), each editor file (``<name>.safetensors``), each setting's scores
(``eval_<setting>.json``); then ``report.json`` and ``report.md``. Keys are by content
(model weights, demonstrations, items, options), so a rerun reuses what is unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.options import Feature, SeaOptions, check_count, check_limit
from ..data.splits import bbq_split, truthfulqa_questions
from ..demos.activations import DemoActivations, capture_demos
from ..demos.builders import PAPER_SEED, bbq_demos
from ..demos.format import Demonstration
from ..demos.prompts import PLAIN
from ..editors.base import Editor
from ..editors.composition import ComposedEditor
from ..editors.sea import SpectralEditor
from ..evaluate.bbq import evaluate_bbq
from ..evaluate.truthfulqa import evaluate_truthfulqa
from ..hf.layers import find_decoder_layers, parse_layers
from ..util.atomic import atomic_write_text
from ..util.identity import shareable_name
from ..util.report import markdown_table, write_json
from .demo_job import load_truthfulness_demos
from .pipeline import fit_from_activations, model_metadata
from .store import Store, content_key, model_key
from .tune_targets import bbq_pooled

Echo = Callable[[str], None]

TRUTH_OPTIONS = SeaOptions(layers="last-8", centered=True)
"""The truthfulness editor's default fit: the project's observed setting on Gemma 3 270M
(README, ``sea demo``: last 8 layers, centred, r = 0.99)."""
BIAS_OPTIONS = SeaOptions(layers="last-2", centered=True, feature=Feature.SQUARED_EXPONENTIAL)
"""The bias editor's default fit: method.md's Φ-SEA squared-exponential on the last 2
layers (centred, as the project's bias grid found the uncentred fits rank 1)."""

SETTINGS = ("none", "truthfulness", "bias", "composed", "joint")
"""The rows of the study, in report order."""
CAPTURE_FIELDS = ("neutral", "site", "token", "token_seed", "layer_path")
"""Options the three fits must share: the demonstrations are captured once."""


@dataclasses.dataclass(frozen=True)
class JointStudyOptions:
    """Sizes and fits of the study (module docstring)."""

    n_truth: int = 100
    n_bias: int = 100
    tqa_limit: int | None = 100
    bbq_limit: int | None = 200
    mc_file: str = "mc_task_v0.json"
    seed: int = 0
    truth: SeaOptions = TRUTH_OPTIONS
    bias: SeaOptions = BIAS_OPTIONS
    joint: SeaOptions | None = None
    batch_size: int = 8

    def __post_init__(self) -> None:
        check_count("n_truth", self.n_truth)
        check_count("n_bias", self.n_bias)
        check_limit("tqa_limit", self.tqa_limit)
        check_limit("bbq_limit", self.bbq_limit)
        check_count("batch_size", self.batch_size)
        for field in CAPTURE_FIELDS:
            values = {getattr(o, field) for o in self.fits.values()}
            if len(values) > 1:
                raise ValueError(
                    f"the truthfulness, bias and joint fits must share {field} (the "
                    f"demonstrations are captured once), got {sorted(map(str, values))}"
                )

    @property
    def fits(self) -> dict[str, SeaOptions]:
        """The options of each fitted editor (the joint one defaults to ``truth``)."""
        return {"truthfulness": self.truth, "bias": self.bias, "joint": self.joint or self.truth}

    def to_json(self) -> dict[str, Any]:
        """The options as JSON (the fits by :meth:`SeaOptions.to_json`)."""
        fits = ("truth", "bias", "joint")
        plain = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        plain = {k: v for k, v in plain.items() if k not in fits}
        return {**plain, **{f"{k}_options": v.to_json() for k, v in self.fits.items()}}


def joint_vs_specialised(
    model_name: str,
    options: JointStudyOptions = JointStudyOptions(),  # noqa: B008 - frozen
    *,
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    dtype: str | None = None,
    echo: Echo = print,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the study into ``out_dir`` (module docstring); returns the report written to
    ``report.json`` (``rows``: one per setting of :data:`SETTINGS`).

    Raises:
        FolderInUse: another run holds ``out_dir``.
        DataFileMissing: HaluEval, BBQ or TruthfulQA is not in ``data_dir``.
        ValueError: too few BBQ items for ``n_bias`` demonstrations, or a layer spec
            the model lacks.
    """
    from ..hf.models import load_model

    with Store(Path(out_dir), echo).exclusive("joint-vs-specialised") as store:
        model, tokenizer = load_model(model_name, dtype=dtype)
        return _run(store, model, tokenizer, model_name, options, data_dir, echo, progress)


def _run(
    store: Store,
    model: nn.Module,
    tokenizer: Any,
    model_name: str,
    options: JointStudyOptions,
    data_dir: str | Path | None,
    echo: Echo,
    progress: bool,
) -> dict[str, Any]:
    """The stages of :func:`joint_vs_specialised` in the folder ``store`` holds."""
    started = time.perf_counter()
    num_layers = len(find_decoder_layers(model, options.truth.layer_path))
    chosen = {k: parse_layers(o.layers, num_layers) for k, o in options.fits.items()}
    union = sorted({layer for layers in chosen.values() for layer in layers})
    truth_demos, truth_source = load_truthfulness_demos(
        options.n_truth, data_dir, PAPER_SEED, echo, fallback=False
    )
    bias_items, held_out = bbq_split(options.n_bias, options.seed, data_dir)
    bias_demos = bbq_demos(bias_items, seed=options.seed)
    rng = random.Random(options.seed)
    bbq_items = rng.sample(held_out, min(len(held_out), options.bbq_limit or len(held_out)))
    questions = truthfulqa_questions(options.mc_file, data_dir, limit=options.tqa_limit)
    echo(
        f"demonstrations: {len(truth_demos)} truthfulness ({truth_source}), {len(bias_demos)} "
        f"bias (BBQ, seed {options.seed}); scored on {len(questions)} TruthfulQA questions "
        f"and {len(bbq_items)} of {len(held_out)} held-out BBQ items"
    )
    model_id = model_key(model, model_name)
    capture = options.truth
    capture_key = {
        "model": model_id,
        "layers": union,
        **{field: str(getattr(capture, field)) for field in CAPTURE_FIELDS},
        **PLAIN.key(),
    }

    def activations(name: str, demos: Sequence[Demonstration]) -> DemoActivations:
        def compute() -> dict[str, torch.Tensor]:
            acts = capture_demos(
                model,
                tokenizer,
                demos,
                layers=union,
                neutral=capture.neutral,
                site=capture.site,
                token=capture.token,
                token_seed=capture.token_seed,
                batch_size=options.batch_size,
                layer_path=capture.layer_path,
                progress=progress,
            )
            return {"neutral": acts.neutral, "positive": acts.positive, "negative": acts.negative}

        key = {**capture_key, "demos": content_key(demos)}
        found = store.tensors(f"activations_{name}", key, compute)
        return DemoActivations(found["neutral"], found["positive"], found["negative"], tuple(union))

    acts = {
        "truthfulness": activations("truthfulness", truth_demos),
        "bias": activations("bias", bias_demos),
    }
    acts["joint"] = _pooled(acts["truthfulness"], acts["bias"])
    sources = {
        "truthfulness": truth_source,
        "bias": f"BBQ ({len(bias_demos)} disambiguated items, seed {options.seed})",
        "joint": f"pooled: {truth_source} + BBQ ({len(bias_demos)} items)",
    }
    demo_keys = {
        "truthfulness": [content_key(truth_demos)],
        "bias": [content_key(bias_demos)],
        "joint": [content_key(truth_demos), content_key(bias_demos)],
    }
    editors: dict[str, Editor] = {}
    fit_keys: dict[str, dict[str, Any]] = {}
    for name, fit in options.fits.items():
        fit_keys[name] = {**capture_key, "demos": demo_keys[name], **fit.to_json()}
        editors[name] = _fitted(
            store, name, fit_keys[name], model, _sliced(acts[name], chosen[name]), fit,
            num_layers, sources[name],
        )  # fmt: skip
    editors["composed"] = ComposedEditor(
        (editors["truthfulness"], editors["bias"]), metadata={"members": ["truthfulness", "bias"]}
    )
    editors["composed"].save(store.path("composed.safetensors"))
    fit_keys["composed"] = {"members": [fit_keys["truthfulness"], fit_keys["bias"]]}

    eval_key = {
        "model": model_id,
        "questions": content_key(questions),
        "items": content_key(bbq_items),
        **PLAIN.key(),
    }
    results: dict[str, dict[str, Any]] = {}
    for setting in SETTINGS:
        editor = editors.get(setting)

        def score(editor: Editor | None = editor, setting: str = setting) -> dict[str, Any]:
            echo(f"scoring {setting} …")
            return _score(model, tokenizer, editor, questions, bbq_items, options, progress)

        key = {**eval_key, "editor": fit_keys.get(setting)}
        results[setting] = store.run(f"eval_{setting}", key, score)
    report = {
        "model": shareable_name(model_name),
        "options": options.to_json(),
        "demonstrations": sources,
        "n_questions": len(questions),
        "n_bbq_items": len(bbq_items),
        "n_bbq_held_out": len(held_out),
        "ranks": {
            name: {str(k): list(v) for k, v in editor.ranks.items()}
            for name, editor in editors.items()
            if isinstance(editor, SpectralEditor)
        },
        "results": results,
        "rows": [_row(setting, results[setting]) for setting in SETTINGS],
        "headers": HEADERS,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(store.path("report.json"), report)
    atomic_write_text(store.path("report.md"), _markdown(report))
    return report


def _pooled(first: DemoActivations, second: DemoActivations) -> DemoActivations:
    """Both sets' activations, one after the other (the same layers)."""
    return DemoActivations(
        torch.cat([first.neutral, second.neutral]),
        torch.cat([first.positive, second.positive]),
        torch.cat([first.negative, second.negative]),
        first.layers,
    )


def _sliced(acts: DemoActivations, layers: Sequence[int]) -> DemoActivations:
    """The activations at ``layers`` only (a subset of ``acts.layers``)."""
    index = [acts.layers.index(layer) for layer in layers]
    return DemoActivations(
        acts.neutral[:, index],
        acts.positive[:, index],
        acts.negative[:, index],
        tuple(int(i) for i in layers),
    )


def _fitted(
    store: Store,
    name: str,
    key: Mapping[str, Any],
    model: nn.Module,
    acts: DemoActivations,
    options: SeaOptions,
    num_layers: int,
    source: str,
) -> SpectralEditor:
    """The editor ``name`` fitted on ``acts`` (stored as ``<name>.safetensors``)."""

    def make() -> tuple[Callable[[Path], object], dict[str, Any]]:
        metadata = {
            **model_metadata(model),
            "neutral": str(options.neutral),
            "token": str(options.token),
            **PLAIN.record(),
            "demonstrations": source,
        }
        editor = fit_from_activations(acts, num_layers, options, metadata=metadata)
        return editor.save, {"n_demonstrations": int(acts.positive.shape[0])}

    def load(path: Path) -> SpectralEditor:
        return SpectralEditor.load(path, model)

    editor, _ = store.artifact(f"fit_{name}", key, f"{name}.safetensors", load, make)
    return editor


def _score(
    model: nn.Module,
    tokenizer: Any,
    editor: Editor | None,
    questions: Sequence[Any],
    items: Sequence[Any],
    options: JointStudyOptions,
    progress: bool,
) -> dict[str, Any]:
    """TruthfulQA and BBQ summaries of the model under ``editor`` (``None``: unedited)."""
    with editor.apply(model) if editor is not None else contextlib.nullcontext():
        tqa = evaluate_truthfulqa(
            model, tokenizer, questions, batch_size=options.batch_size, progress=progress
        )
        bbq = evaluate_bbq(
            model, tokenizer, items, batch_size=options.batch_size, progress=progress
        )
    overall = bbq.summary["overall"]
    return {
        "truthfulqa": {k: tqa.summary[k] for k in ("n", "mc1", "mc2", "mc3", "seconds")},
        "bbq": {
            "n": len(bbq.per_item),
            **bbq_pooled(bbq.per_item),
            "bias_score_ambig": overall["ambig"]["bias_score"],
            "bias_score_disambig": overall["disambig"]["bias_score"],
            "overall": overall,
            "seconds": bbq.summary["seconds"],
        },
    }


HEADERS = [
    "editor",
    "TQA MC1",
    "TQA MC2",
    "BBQ acc",
    "BBQ acc ambig",
    "BBQ acc disambig",
    "BBQ bias score ambig",
    "BBQ stereotype rate",
]


def _row(setting: str, result: Mapping[str, Any]) -> list[Any]:
    tqa, bbq = result["truthfulqa"], result["bbq"]
    return [
        setting,
        tqa["mc1"],
        tqa["mc2"],
        bbq["accuracy"],
        bbq["accuracy_ambig"],
        bbq["accuracy_disambig"],
        bbq["bias_score_ambig"],
        bbq["stereotype_rate"],
    ]


def _markdown(report: Mapping[str, Any]) -> str:
    fits = report["options"]
    lines = [
        f"# Joint vs specialised editors ({report['model']})",
        "",
        f"TruthfulQA: {report['n_questions']} questions; BBQ: {report['n_bbq_items']} of "
        f"{report['n_bbq_held_out']} held-out items (templates no demonstration came from).",
        "",
        markdown_table(report["headers"], report["rows"]),
        "Demonstrations: " + "; ".join(f"{k}: {v}" for k, v in report["demonstrations"].items()),
        "",
        "Fits: "
        + "; ".join(
            f"{name}: layers {fits[f'{name}_options']['layers']}, "
            f"{fits[f'{name}_options']['feature']}, "
            f"{'centred' if fits[f'{name}_options']['centered'] else 'uncentred'}, "
            f"r = {fits[f'{name}_options']['pos_ratio']}"
            for name in ("truthfulness", "bias", "joint")
        )
        + "; composed = truthfulness then bias.",
        "",
    ]
    return "\n".join(lines)
