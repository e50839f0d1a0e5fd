"""Long jobs as resumable stages: each stage's result is stored (atomically) in the job's
folder with the options that produced it; a rerun with the same options skips it.

:func:`truthfulness_demo` is the README's main job (``sea demo``): HaluEval
demonstrations → SEA editor → TruthfulQA MC1/MC2/MC3 before and after.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console

from ..core.options import SeaOptions
from ..data.errors import DataFileMissing
from ..data.halueval import load_halueval_qa
from ..data.locate import resolve
from ..data.truthfulqa import load_mc_task
from ..demos.builders import halueval_demos
from ..demos.format import Demonstration, read_demos, write_demos
from ..editors.sea import SpectralEditor
from ..evaluate.truthfulqa import evaluate_truthfulqa
from ..util.atomic import atomic_write_text
from ..util.report import (
    RANK_HEADERS,
    markdown_table,
    print_table,
    ranks_rows,
    write_json,
    write_jsonl,
)

SHIPPED_DEMOS = "truthful_demos.jsonl"


def shipped_demos_path() -> Path:
    """Path of the project's hand-written truthfulness demonstrations (30 pairs)."""
    return Path(str(resources.files("spectral_edit.resources") / SHIPPED_DEMOS))


def options_key(options: dict[str, Any]) -> str:
    """A stable hash of JSON-able options."""
    return hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class StageStore:
    """Stage results under ``folder/<name>.json`` as ``{"key": ..., "result": ...}``."""

    folder: Path
    console: Console = field(default_factory=Console)

    def run(self, name: str, options: dict[str, Any], compute: Callable[[], Any]) -> Any:
        """Return the stored result of ``name`` for these options, or compute and store it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{name}.json"
        key = options_key(options)
        if path.is_file():
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                stored = None
            if isinstance(stored, dict) and stored.get("key") == key:
                self.console.print(f"[dim]· {name}: done earlier, reusing {path}[/dim]")
                return stored["result"]
        result = compute()
        write_json(path, {"key": key, "options": options, "result": result})
        return result


def load_truthfulness_demos(
    n_demos: int, data_dir: str | Path | None, seed: int, console: Console
) -> tuple[list[Demonstration], str]:
    """HaluEval demonstrations (one-turn file, then multi-turn for N > 500), or the shipped
    file when HaluEval is not available. Returns (demos, description of the source)."""
    try:
        one = load_halueval_qa(resolve("halueval/qa_one-turn_data.json", data_dir))
    except DataFileMissing as error:
        first_line = str(error).splitlines()[0]
        console.print(
            f"[yellow]HaluEval not available ({first_line}); using the shipped "
            f"hand-written demonstrations instead.[/yellow]"
        )
        demos = read_demos(shipped_demos_path())[:n_demos]
        return demos, f"shipped hand-written file ({len(demos)} pairs)"
    demos = halueval_demos(one, limit=n_demos, seed=seed)
    source = f"HaluEval QA one-turn ({len(demos)} of {len(one)} items, seed {seed})"
    if n_demos > len(one):
        try:
            multi = load_halueval_qa(resolve("halueval/qa_multi-turn_data.json", data_dir))
        except DataFileMissing:
            multi = []
        extra = halueval_demos(multi, limit=n_demos - len(demos), seed=seed)
        demos += extra
        source += f" + multi-turn ({len(extra)} items; same questions, other hallucinations)"
    return demos, source


def truthfulness_demo(
    model_name: str,
    *,
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    n_demos: int = 100,
    layers: str = "last-8",
    pos_ratio: float = 0.99,
    neg_ratio: float = 0.99,
    centered: bool = False,
    neutral: str = "generate",
    feature: str = "linear",
    limit: int | None = None,
    mc_file: str = "mc_task_v0.json",
    seed: int = 44,
    batch_size: int = 8,
    dtype: str | None = None,
    device_map: str | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """The main job; results go to ``out_dir`` (report.md, report.json, per-question files).

    Stages (each resumable): demonstrations, editor fit, unedited and edited evaluation.
    """
    from ..hf.models import load_model
    from .pipeline import fit_editor

    console = console or Console()
    out = Path(out_dir)
    store = StageStore(out, console)
    demos, demo_source = load_truthfulness_demos(n_demos, data_dir, seed, console)
    demos_path = write_demos(out / "demos.jsonl", demos)
    console.print(f"demonstrations: {demo_source} → {demos_path}")

    started = time.perf_counter()
    model, tokenizer = load_model(model_name, dtype=dtype, device_map=device_map)
    load_seconds = time.perf_counter() - started
    console.print(f"model {model_name} loaded in {load_seconds:.1f} s")

    fit_options = {
        "model": model_name,
        "demos": options_key({"d": [d.__dict__ for d in demos]}),
        "layers": layers,
        "pos_ratio": pos_ratio,
        "neg_ratio": neg_ratio,
        "centered": centered,
        "neutral": neutral,
        "feature": feature,
    }
    editor_path = out / "editor.safetensors"

    def fit_stage() -> dict[str, Any]:
        t0 = time.perf_counter()
        editor = fit_editor(
            model,
            tokenizer,
            demos,
            SeaOptions(
                layers=layers,
                neutral=neutral,
                pos_ratio=pos_ratio,
                neg_ratio=neg_ratio,
                centered=centered,
                feature=feature,
            ),
            batch_size=batch_size,
            progress=True,
            metadata={"demonstrations": demo_source},
        )
        editor.save(editor_path)
        return {"seconds": time.perf_counter() - t0, "path": str(editor_path)}

    fit_result = store.run("fit", fit_options, fit_stage)
    if not editor_path.is_file():  # stage record without its file: refit
        (out / "fit.json").unlink()
        fit_result = store.run("fit", fit_options, fit_stage)
    editor = SpectralEditor.load(editor_path, model)
    print_table("SEA ranks per layer", RANK_HEADERS, ranks_rows(editor.metadata), console)

    try:
        questions = load_mc_task(resolve(f"truthfulqa/{mc_file}", data_dir))
    except DataFileMissing as error:
        console.print(f"[red]TruthfulQA is not available, so nothing is evaluated:[/red]\n{error}")
        return {"fit": fit_result, "evaluated": False}
    if limit is not None:
        questions = questions[:limit]

    def eval_stage(edited: bool) -> dict[str, Any]:
        label = "edited" if edited else "unedited"
        if edited:
            with editor.apply(model):
                result = evaluate_truthfulqa(
                    model, tokenizer, questions, progress=f"TruthfulQA ({label})"
                )
        else:
            result = evaluate_truthfulqa(
                model, tokenizer, questions, progress=f"TruthfulQA ({label})"
            )
        write_jsonl(out / f"truthfulqa_{label}.jsonl", result.per_question)
        return result.summary

    eval_options = {"model": model_name, "mc_file": mc_file, "limit": limit}
    unedited = store.run("eval_unedited", eval_options, lambda: eval_stage(False))
    edited = store.run("eval_edited", {**eval_options, **fit_options}, lambda: eval_stage(True))

    headers = ["model", "MC1", "MC2", "MC3", "fit s", "eval s"]
    rows = [
        ["unedited", unedited["mc1"], unedited["mc2"], unedited["mc3"], None, unedited["seconds"]],
        [
            f"SEA ({layers}, r+={pos_ratio}, r-={neg_ratio})",
            edited["mc1"],
            edited["mc2"],
            edited["mc3"],
            fit_result["seconds"],
            edited["seconds"],
        ],
    ]
    print_table(f"TruthfulQA ({unedited['n']} questions, {mc_file})", headers, rows, console)
    report = {
        "model": model_name,
        "demonstrations": demo_source,
        "n_demonstrations": len(demos),
        "options": fit_options,
        "mc_file": mc_file,
        "n_questions": unedited["n"],
        "unedited": unedited,
        "edited": edited,
        "fit_seconds": fit_result["seconds"],
        "model_load_seconds": load_seconds,
        "editor": dict(editor.metadata),
    }
    write_json(out / "report.json", report)
    md = [
        f"# SEA truthfulness demo: {model_name}\n",
        f"Demonstrations: {demo_source}. TruthfulQA file: {mc_file}, {unedited['n']} questions.\n",
        markdown_table(headers, rows),
        "\n## Ranks per layer\n",
        markdown_table(RANK_HEADERS, ranks_rows(editor.metadata)),
    ]
    atomic_write_text(out / "report.md", "\n".join(md))
    console.print(f"report written to {out / 'report.md'}")
    return report
