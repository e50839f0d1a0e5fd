"""The ``sea`` command line. Thin: every command calls the library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..hf.models import DEFAULT_MODEL

app = typer.Typer(
    help="Spectral Editing of Activations (SEA): fit, apply and evaluate activation edits.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
demos_app = typer.Typer(help="Build demonstration files from benchmark data.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate a model, optionally under an editor.", no_args_is_help=True)
app.add_typer(demos_app, name="demos")
app.add_typer(eval_app, name="eval")
console = Console()
err = Console(stderr=True)

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model", "-m", help=f"HF id or folder, .gguf file, or built-in name ({DEFAULT_MODEL})."
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Benchmark data folder (default: $SEA_DATA_DIR, else the user cache)."
    ),
]
DtypeOpt = Annotated[str | None, typer.Option(help="float32, bfloat16, float16 or auto.")]
DeviceMapOpt = Annotated[
    str | None, typer.Option("--device-map", help="accelerate device map, e.g. auto.")
]
EditorOpt = Annotated[Path | None, typer.Option("--editor", "-e", help="Editor .safetensors.")]
LimitOpt = Annotated[int | None, typer.Option(help="Use only the first N items.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Sequences per forward pass.")]


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=2)


def _load(model: str, dtype: str | None, device_map: str | None):
    from ..hf.models import ModelLoadError, load_model

    try:
        with console.status(f"loading {model} …"):
            return load_model(model, dtype=dtype, device_map=device_map)
    except (ModelLoadError, OSError, ValueError) as error:
        raise _fail(str(error)) from None


def _load_editor(path: Path, model, alpha: float | None = None):
    from ..editors.file_format import EditorFileError
    from ..editors.registry import load_editor

    try:
        editor = load_editor(path, model)
    except EditorFileError as error:
        raise _fail(str(error)) from None
    return editor if alpha is None else editor.with_options(alpha=alpha)


def _edited(model, editor: Path | None, alpha: float | None):
    """A context manager applying the editor file (or nothing) to the model."""
    from contextlib import nullcontext

    return nullcontext() if editor is None else _load_editor(editor, model, alpha).apply(model)


# ---------------------------------------------------------------------------- fit
@app.command()
def fit(
    demos: Annotated[Path, typer.Option(help="Demonstrations (JSON Lines).")],
    out: Annotated[Path, typer.Option(help="Where to write the editor (.safetensors).")],
    model: ModelOpt = DEFAULT_MODEL,
    layers: Annotated[str, typer.Option(help="last-L, all, or a list like 10,11.")] = "last-8",
    pos_ratio: Annotated[float, typer.Option(help="Energy ratio for k+.")] = 0.99,
    neg_ratio: Annotated[float, typer.Option(help="Energy ratio for k-.")] = 0.99,
    pos_rank: Annotated[int | None, typer.Option(help="Fixed k+ (overrides the ratio).")] = None,
    neg_rank: Annotated[int | None, typer.Option(help="Fixed k- (overrides the ratio).")] = None,
    site: Annotated[str, typer.Option(help="residual or mlp.")] = "residual",
    neutral: Annotated[str, typer.Option(help="generate, prompt or given.")] = "generate",
    token: Annotated[str, typer.Option(help="last or mean (over the answer).")] = "last",
    centered: Annotated[bool, typer.Option(help="Centre the cross-covariances.")] = False,
    feature: Annotated[
        str, typer.Option(help="linear, tanh, elu or squared-exponential (Φ-SEA).")
    ] = "linear",
    feature_scales: Annotated[
        str | None,
        typer.Option(
            help="Φ-SEA scales, comma-separated, one per fitted layer "
            "(default: each layer's neutral RMS)."
        ),
    ] = None,
    merge: Annotated[str, typer.Option(help="norm or mean.")] = "norm",
    alpha: Annotated[float, typer.Option(help="Edit strength (0 = no edit).")] = 1.0,
    layer_path: Annotated[
        str | None,
        typer.Option(help="Module path of the decoder layers, if not found automatically."),
    ] = None,
    batch_size: BatchOpt = 8,
    dtype: DtypeOpt = None,
    device_map: DeviceMapOpt = None,
) -> None:
    """Fit a SEA editor on a demonstrations file."""
    from ..core.options import SeaOptions
    from ..demos.format import DemoFormatError, read_demos
    from ..experiments.pipeline import fit_editor
    from ..util.report import RANK_HEADERS, print_table, ranks_rows

    try:
        records = read_demos(demos)
    except DemoFormatError as error:
        raise _fail(str(error)) from None
    scales = None
    if feature_scales is not None:
        try:
            scales = [float(x) for x in feature_scales.split(",")]
        except ValueError:
            raise _fail(f"--feature-scales: not a list of numbers: {feature_scales!r}") from None
        if not all(x > 0 for x in scales):
            raise _fail(f"--feature-scales: every scale must be > 0, got {feature_scales!r}")
    lm, tokenizer = _load(model, dtype, device_map)
    try:
        options = SeaOptions(
            layers=layers,
            neutral=neutral,
            token=token,
            site=site,
            layer_path=layer_path,
            pos_ratio=pos_ratio,
            neg_ratio=neg_ratio,
            pos_rank=pos_rank,
            neg_rank=neg_rank,
            centered=centered,
            feature=feature,
            feature_scales=scales,
            merge=merge,
            alpha=alpha,
        )
        editor = fit_editor(
            lm,
            tokenizer,
            records,
            options,
            batch_size=batch_size,
            progress=True,
            metadata={"demonstrations_file": str(demos)},
        )
    except (ValueError, LookupError) as error:
        raise _fail(str(error)) from None
    editor.save(out)
    print_table(
        f"editor {out}: {len(records)} demonstrations",
        RANK_HEADERS,
        ranks_rows(editor.metadata),
        console,
    )


# ------------------------------------------------------------------------ generate
@app.command()
def generate(
    prompts: Annotated[list[str], typer.Argument(help="Prompts to continue.")],
    model: ModelOpt = DEFAULT_MODEL,
    editor: EditorOpt = None,
    alpha: Annotated[float | None, typer.Option(help="Override the editor's strength.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 48,
    stop: Annotated[
        list[str] | None, typer.Option(help="Stop strings (default: blank line, next Q:).")
    ] = None,
    batch_size: BatchOpt = 8,
    dtype: DtypeOpt = None,
    device_map: DeviceMapOpt = None,
) -> None:
    """Greedy continuations, unedited and (with --editor) edited, side by side."""
    from rich.table import Table

    from ..hf.generation import ANSWER_STOPS, generate_greedy

    lm, tokenizer = _load(model, dtype, device_map)
    prompts = [p.encode().decode("unicode_escape") if "\\n" in p else p for p in prompts]
    stops = tuple(stop) if stop else ANSWER_STOPS
    options = {"max_new_tokens": max_new_tokens, "stops": stops, "batch_size": batch_size}
    plain = generate_greedy(lm, tokenizer, prompts, **options)
    table = Table(show_lines=True)
    table.add_column("prompt", max_width=40)
    table.add_column("unedited")
    if editor is None:
        for prompt, text in zip(prompts, plain, strict=True):
            table.add_row(prompt[-200:], text)
    else:
        sea = _load_editor(editor, lm, alpha)
        with sea.apply(lm):
            edited = generate_greedy(lm, tokenizer, prompts, **options)
        table.add_column(f"edited (α={sea.alpha:g})")
        for prompt, a, b in zip(prompts, plain, edited, strict=True):
            table.add_row(prompt[-200:], a, b)
    console.print(table)


# ---------------------------------------------------------------------------- info
@app.command()
def info(editor: Annotated[Path, typer.Argument(help="Editor .safetensors file.")]) -> None:
    """Show an editor's options, ranks and layer signature values."""
    from rich.table import Table

    from ..editors.registry import load_editor
    from ..editors.sea import EditorFileError, SpectralEditor
    from ..util.report import RANK_HEADERS, print_table, ranks_rows

    try:
        sea = load_editor(editor)
    except EditorFileError as error:
        raise _fail(str(error)) from None
    if not isinstance(sea, SpectralEditor):
        _print_baseline_info(editor, sea)
        return
    meta = dict(sea.metadata)
    table = Table(title=str(editor), show_header=False)
    rows = {
        "model": meta.get("model"),
        "hidden size": sea.hidden_size,
        "model layers": sea.num_layers,
        "fitted layers": ",".join(map(str, sea.layers)),
        "edited layers": ",".join(map(str, sea.active_layers)),
        "site": sea.site,
        "merge": sea.merge,
        "alpha": sea.alpha,
        "feature": sea.feature,
        "centered": meta.get("centered"),
        "ratios (+/-)": f"{meta.get('pos_ratio')} / {meta.get('neg_ratio')}",
        "demonstrations": meta.get("n_demonstrations"),
        "neutral": meta.get("neutral"),
    }
    for key, value in rows.items():
        table.add_row(key, str(value))
    console.print(table)
    print_table("ranks and signature per layer", RANK_HEADERS, ranks_rows(meta), console)


def _print_baseline_info(path: Path, editor) -> None:
    """A baseline editor's options and its scalar metadata."""
    from dataclasses import fields

    from rich.table import Table

    table = Table(title=f"{path} ({type(editor).__name__})", show_header=False)
    for f in fields(editor):
        value = getattr(editor, f.name)
        if f.name == "metadata":
            for key, item in value.items():
                if isinstance(item, (str, int, float, bool)) or item is None:
                    table.add_row(key, str(item))
        elif isinstance(value, (str, int, float)) or value is None:
            table.add_row(f.name, str(value))
        elif isinstance(value, tuple) and all(isinstance(v, (int, str)) for v in value):
            table.add_row(f.name, ",".join(map(str, value)))
    console.print(table)


# --------------------------------------------------------------------------- demos
def _write_demos(records, out: Path) -> None:
    from ..demos.format import write_demos

    write_demos(out, records)
    console.print(f"wrote {len(records)} demonstrations to {out}")


def _data_error(error: Exception) -> typer.Exit:
    return _fail(str(error))


@demos_app.command("halueval")
def demos_halueval(
    out: Annotated[Path, typer.Option(help="Output JSON Lines file.")],
    source: Annotated[
        str,
        typer.Option(
            help="one-turn, multi-turn, both (same questions twice), or full (qa_data.json)."
        ),
    ] = "one-turn",
    limit: LimitOpt = None,
    seed: Annotated[int, typer.Option(help="Shuffle seed (paper: 44).")] = 44,
    data_dir: DataDirOpt = None,
) -> None:
    """HaluEval QA → demonstrations (positive = right answer, negative = a hallucination)."""
    from ..data import DataFileMissing, DataFormatError, load_halueval_qa, resolve
    from ..demos.builders import halueval_demos

    files = {
        "one-turn": ["qa_one-turn_data.json"],
        "multi-turn": ["qa_multi-turn_data.json"],
        "both": ["qa_one-turn_data.json", "qa_multi-turn_data.json"],
        "full": ["qa_data.json"],
    }
    if source not in files:
        raise _fail(f"--source must be one of {', '.join(files)}, not {source!r}")
    try:
        paths = [resolve(f"halueval/{name}", data_dir) for name in files[source]]
        items = [item for path in paths for item in load_halueval_qa(path)]
    except (DataFileMissing, DataFormatError) as error:
        raise _data_error(error) from None
    _write_demos(halueval_demos(items, limit=limit, seed=seed), out)


@demos_app.command("truthfulqa")
def demos_truthfulqa(
    out: Annotated[Path, typer.Option(help="Output JSON Lines file.")],
    fold: Annotated[int, typer.Option(help="SEA fold (1 or 2) to take demonstrations from.")],
    limit: LimitOpt = None,
    seed: Annotated[int, typer.Option(help="Seed for shuffling and negatives.")] = 44,
    data_dir: DataDirOpt = None,
) -> None:
    """A TruthfulQA fold → demonstrations (best answer vs an incorrect answer)."""
    from ..data import DataFileMissing, DataFormatError, load_fold
    from ..demos.builders import truthfulqa_demos

    try:
        rows = load_fold(fold, data_dir)
    except (DataFileMissing, DataFormatError, ValueError) as error:
        raise _data_error(error) from None
    _write_demos(truthfulqa_demos(rows, limit=limit, seed=seed), out)


# ---------------------------------------------------------------------------- eval
@eval_app.command("truthfulqa")
def eval_truthfulqa(
    model: ModelOpt = DEFAULT_MODEL,
    editor: EditorOpt = None,
    alpha: Annotated[float | None, typer.Option(help="Override the editor's strength.")] = None,
    limit: LimitOpt = None,
    fold: Annotated[int | None, typer.Option(help="Only the questions of SEA fold 1 or 2.")] = None,
    mc_file: Annotated[
        str, typer.Option(help="mc_task_v0.json (lm-eval) or mc_task.json.")
    ] = "mc_task_v0.json",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/truthfulqa"),
    batch_size: BatchOpt = 16,
    data_dir: DataDirOpt = None,
    dtype: DtypeOpt = None,
    device_map: DeviceMapOpt = None,
) -> None:
    """TruthfulQA MC1/MC2/MC3 (per-question JSON Lines + summary JSON)."""
    from ..data import DataFileMissing, DataFormatError, load_fold, load_mc_task, resolve
    from ..data.truthfulqa import split_mc_by_fold
    from ..evaluate.truthfulqa import evaluate_truthfulqa
    from ..util.report import print_table, write_json, write_jsonl

    try:
        questions = load_mc_task(resolve(f"truthfulqa/{mc_file}", data_dir))
        if fold is not None:
            questions = split_mc_by_fold(questions, load_fold(fold, data_dir))
    except (DataFileMissing, DataFormatError, ValueError) as error:
        raise _data_error(error) from None
    questions = questions[:limit] if limit else questions
    lm, tokenizer = _load(model, dtype, device_map)
    with _edited(lm, editor, alpha):
        result = evaluate_truthfulqa(lm, tokenizer, questions, batch_size=batch_size, progress=True)
    summary = {
        **result.summary,
        "model": model,
        "editor": str(editor) if editor else None,
        "alpha": alpha,
        "mc_file": mc_file,
        "fold": fold,
    }
    write_jsonl(out / "per_question.jsonl", result.per_question)
    write_json(out / "summary.json", summary)
    s = result.summary
    print_table(
        f"TruthfulQA ({s['n']} questions)",
        ["MC1", "MC2", "MC3", "seconds"],
        [[s["mc1"], s["mc2"], s["mc3"], s["seconds"]]],
        console,
    )
    console.print(f"results in {out}/")


def _bbq_split(data_dir: Path | None, n: int, seed: int):
    """The deterministic BBQ split shared by ``sea demos bbq`` and ``sea eval bbq``."""
    from ..data import DataFileMissing, DataFormatError
    from ..data.splits import bbq_split

    try:
        return bbq_split(n, seed, data_dir)
    except (DataFileMissing, DataFormatError, ValueError) as error:
        raise _data_error(error) from None


@demos_app.command("bbq")
def demos_bbq(
    out: Annotated[Path, typer.Option(help="Output JSON Lines file.")],
    n: Annotated[int, typer.Option(help="Demonstrations (disambiguated items).")] = 1000,
    seed: Annotated[int, typer.Option(help="Split and negative-choice seed.")] = 0,
    data_dir: DataDirOpt = None,
) -> None:
    """BBQ → demonstrations (gold option vs another option), held out by template."""
    from ..demos.builders import bbq_demos

    demo_items, held_out = _bbq_split(data_dir, n, seed)
    _write_demos(bbq_demos(demo_items, seed=seed), out)
    console.print(
        f"{len(held_out)} items of other templates stay for `sea eval bbq "
        f"--held-out-from {n} --seed {seed}`"
    )


@eval_app.command("bbq")
def eval_bbq(
    model: ModelOpt = DEFAULT_MODEL,
    editor: EditorOpt = None,
    alpha: Annotated[float | None, typer.Option(help="Override the editor's strength.")] = None,
    held_out_from: Annotated[
        int,
        typer.Option(
            help="Evaluate only items held out from `sea demos bbq --n N` (0 = all items)."
        ),
    ] = 1000,
    seed: Annotated[int, typer.Option(help="The split seed used for the demonstrations.")] = 0,
    limit: LimitOpt = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/bbq"),
    batch_size: BatchOpt = 16,
    data_dir: DataDirOpt = None,
    dtype: DtypeOpt = None,
    device_map: DeviceMapOpt = None,
) -> None:
    """BBQ accuracy, unknown rate, bias score and stereotype rate (ambiguous/disambiguated)."""
    from ..evaluate.bbq import evaluate_bbq
    from ..util.report import write_json, write_jsonl

    _, items = _bbq_split(data_dir, held_out_from, seed)
    items = items[:limit] if limit else items
    lm, tokenizer = _load(model, dtype, device_map)
    with _edited(lm, editor, alpha):
        result = evaluate_bbq(lm, tokenizer, items, batch_size=batch_size, progress=True)
    write_jsonl(out / "per_item.jsonl", result.per_item)
    write_json(out / "summary.json", result.summary)
    _print_bbq(result.summary)
    console.print(f"results in {out}/")


def _print_bbq(summary: dict) -> None:
    from ..util.report import print_table

    rows = []
    groups = {"overall": summary["overall"], **summary.get("by_category", {})}
    for name, group in groups.items():
        for condition in ("ambig", "disambig"):
            g = group[condition]
            rows.append(
                [
                    name,
                    condition,
                    g["n"],
                    g["accuracy"],
                    g["unknown_rate"],
                    g["bias_score"],
                    g["stereotype_rate"],
                ]
            )
    print_table("BBQ", ["category", "context", "n", "A%", "U%", "BS%", "SR%"], rows, console)


@eval_app.command("crows-pairs")
def eval_crows_pairs(
    file: Annotated[Path, typer.Option(help="crows_pairs_anonymized.csv (upstream format).")],
    model: ModelOpt = DEFAULT_MODEL,
    editor: EditorOpt = None,
    alpha: Annotated[float | None, typer.Option(help="Override the editor's strength.")] = None,
    limit: LimitOpt = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/crows_pairs"),
    batch_size: BatchOpt = 16,
    dtype: DtypeOpt = None,
    device_map: DeviceMapOpt = None,
) -> None:
    """CrowS-Pairs: % of pairs whose more-stereotypical sentence scores higher."""
    from ..data import DataFormatError, load_crows_pairs
    from ..evaluate.crows_pairs import evaluate_crows_pairs
    from ..util.report import print_table, write_json, write_jsonl

    try:
        pairs = load_crows_pairs(file)
    except (DataFormatError, OSError) as error:
        raise _data_error(error) from None
    pairs = pairs[:limit] if limit else pairs
    lm, tokenizer = _load(model, dtype, device_map)
    with _edited(lm, editor, alpha):
        result = evaluate_crows_pairs(lm, tokenizer, pairs, batch_size=batch_size, progress=True)
    write_jsonl(out / "per_pair.jsonl", result.per_pair)
    write_json(out / "summary.json", result.summary)
    rows = [["overall", result.summary["overall"]["n"], result.summary["overall"]["pct_more"]]]
    rows += [[t, r["n"], r["pct_more"]] for t, r in result.summary["by_type"].items()]
    print_table("CrowS-Pairs", ["bias type", "pairs", "% sent_more preferred"], rows, console)


@eval_app.command("control")
def eval_control(
    tasks: Annotated[
        str, typer.Option(help="Comma list of control tasks.")
    ] = "arc_easy,arc_challenge,piqa,openbook_qa,commonsense_qa,winogrande,boolq,mmlu",
    model: ModelOpt = DEFAULT_MODEL,
    editor: EditorOpt = None,
    alpha: Annotated[float | None, typer.Option(help="Override the editor's strength.")] = None,
    limit: LimitOpt = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/control"),
    batch_size: BatchOpt = 16,
    data_dir: DataDirOpt = None,
    dtype: DtypeOpt = None,
    device_map: DeviceMapOpt = None,
) -> None:
    """Control tasks (log-likelihood multiple choice; gsm8k by greedy generation)."""
    from ..data import DataFileMissing, DataFormatError
    from ..evaluate.control import evaluate_control
    from ..util.report import print_table, write_json

    lm, tokenizer = _load(model, dtype, device_map)
    try:
        with _edited(lm, editor, alpha):
            result = evaluate_control(
                lm,
                tokenizer,
                [t.strip() for t in tasks.split(",")],
                data_dir=data_dir,
                limit=limit,
                batch_size=batch_size,
                progress=True,
            )
    except (DataFileMissing, DataFormatError, KeyError, ValueError) as error:
        raise _data_error(error) from None
    write_json(out / "summary.json", {k: v for k, v in result.items() if k != "per_item"})
    rows = [
        [name, s.get("n"), s.get("acc", s.get("strict_match")), s.get("acc_norm")]
        for name, s in result["tasks"].items()
    ]
    print_table("control tasks", ["task", "n", "acc / EM", "acc_norm"], rows, console)


# ---------------------------------------------------------------------------- compare
@app.command()
def compare(
    model: ModelOpt = DEFAULT_MODEL,
    demos: Annotated[
        Path | None,
        typer.Option(help="Demonstrations file (default: HaluEval, see --n-demos)."),
    ] = None,
    n_demos: Annotated[
        int, typer.Option("--n-demos", help="HaluEval demonstrations when --demos is not given.")
    ] = 100,
    methods: Annotated[
        str, typer.Option(help="Comma list of methods.")
    ] = "none,sea,phi-sea,mean-diff,pca-vector,iti,leace,lora,dola",
    per_fold: Annotated[
        int | None,
        typer.Option("--per-fold", help="TruthfulQA questions per fold (default: all)."),
    ] = None,
    both_directions: Annotated[
        bool,
        typer.Option(help="Also tune on fold 2 and report on fold 1 (twice the tuning cost)."),
    ] = False,
    mc_file: Annotated[
        str, typer.Option(help="mc_task_v0.json (lm-eval) or mc_task.json.")
    ] = "mc_task_v0.json",
    control_tasks: Annotated[
        str, typer.Option(help="Comma list of control tasks.")
    ] = "arc_easy,arc_challenge,piqa,openbook_qa,commonsense_qa,winogrande,boolq,mmlu",
    control_limit: Annotated[
        int | None, typer.Option(help="Items per control task (0 = all).")
    ] = 50,
    neutral: Annotated[str, typer.Option(help="SEA neutral answers: generate or prompt.")] = (
        "generate"
    ),
    seed: Annotated[int, typer.Option(help="Seed for demonstrations and fitting.")] = 0,
    out: Annotated[Path, typer.Option(help="Report folder (reruns resume).")] = Path(
        "runs/compare"
    ),
    batch_size: BatchOpt = 16,
    data_dir: DataDirOpt = None,
    dtype: DtypeOpt = None,
    device_map: DeviceMapOpt = None,
) -> None:
    """Every method on the same demonstrations and questions, tuned on one TruthfulQA fold
    and reported on the other, with control tasks: report.md, report.json and a plot."""
    from ..data import DataFileMissing, DataFormatError, load_fold, load_mc_task, resolve
    from ..data.truthfulqa import split_mc_by_fold
    from ..demos.format import DemoFormatError, read_demos
    from ..experiments.compare import CompareOptions, run_compare
    from ..experiments.jobs import load_truthfulness_demos
    from ..experiments.methods import parse_methods

    try:
        names = parse_methods(methods)
        questions = load_mc_task(resolve(f"truthfulqa/{mc_file}", data_dir))
        folds = {
            fold: split_mc_by_fold(questions, load_fold(fold, data_dir))[:per_fold]
            for fold in (1, 2)
        }
        demo_list = (
            read_demos(demos)
            if demos is not None
            else load_truthfulness_demos(n_demos, data_dir, seed, console)[0]
        )
    except (DataFileMissing, DataFormatError, DemoFormatError, ValueError) as error:
        raise _data_error(error) from None
    options = CompareOptions(
        methods=tuple(names),
        control_tasks=tuple(t.strip() for t in control_tasks.split(",") if t.strip()),
        control_limit=control_limit or None,
        neutral=neutral,
        batch_size=batch_size,
        seed=seed,
        both_directions=both_directions,
    )
    lm, tokenizer = _load(model, dtype, device_map)
    report = run_compare(
        lm,
        tokenizer,
        demo_list,
        folds,
        options,
        out,
        data_dir=data_dir,
        model_name=model,
        console=console,
        progress=True,
    )
    failed = [name for name, row in report["methods"].items() if "error" in row]
    console.print(f"report in {out}/report.md")
    if failed:
        err.print(f"[red]failed methods:[/red] {', '.join(failed)} (rerun to retry them)")
        raise typer.Exit(code=1)


# ---------------------------------------------------------------------------- demo
@app.command()
def demo(
    model: ModelOpt = DEFAULT_MODEL,
    n_demos: Annotated[int, typer.Option("--n-demos", help="HaluEval demonstrations.")] = 100,
    layers: Annotated[str, typer.Option(help="last-L, all, or a list.")] = "last-8",
    pos_ratio: Annotated[float, typer.Option(help="Energy ratio for k+.")] = 0.995,
    neg_ratio: Annotated[float, typer.Option(help="Energy ratio for k-.")] = 0.995,
    centered: Annotated[
        bool, typer.Option(help="Centre the cross-covariances (measured better on Gemma 3).")
    ] = True,
    neutral: Annotated[str, typer.Option(help="generate or prompt.")] = "generate",
    limit: LimitOpt = None,
    out: Annotated[Path, typer.Option(help="Report folder.")] = Path("runs/demo"),
    batch_size: BatchOpt = 8,
    data_dir: DataDirOpt = None,
    dtype: DtypeOpt = None,
    device_map: DeviceMapOpt = None,
) -> None:
    """The main job: HaluEval demonstrations → SEA editor → TruthfulQA before and after."""
    from ..experiments.jobs import truthfulness_demo

    truthfulness_demo(
        model,
        out_dir=out,
        data_dir=data_dir,
        n_demos=n_demos,
        layers=layers,
        pos_ratio=pos_ratio,
        neg_ratio=neg_ratio,
        centered=centered,
        neutral=neutral,
        limit=limit,
        batch_size=batch_size,
        dtype=dtype,
        device_map=device_map,
        console=console,
    )


def main() -> None:  # pragma: no cover - console entry point
    app()
