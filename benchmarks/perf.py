#!/usr/bin/env python
"""One performance report: time and peak memory of evaluation, capture, fit and generation.

Each part runs in its own child process (the model loaded afresh), so that one part's
memory never counts in another's; inside a part every measurement resets the peak first
(Linux ``/proc/self/clear_refs``; ``torch.cuda.reset_peak_memory_stats`` on CUDA) and
reads it after (``VmHWM``; ``torch.cuda.max_memory_allocated``). Parts (``--parts``):

- ``truthfulqa``: our evaluator (:func:`~spectral_edit.evaluate.truthfulqa.evaluate_truthfulqa`)
  and lm-evaluation-harness (``run_lmeval_truthfulqa.py`` in its own venv, a child
  process whose peak RSS is read with ``os.wait4``) on the first ``--tqa-limit``
  questions: wall time of each (lm-eval's ``evaluate``, without its model load), MC1/MC2
  of both and the largest per-answer log-likelihood difference (``compare_lmeval.agreement``);
- ``capture``: the positive sequences of the first ``--capture-demos`` demonstrations
  through a plain ``output_hidden_states`` forward against
  :func:`~spectral_edit.hf.capture.capture` (``fit_speed.plain_forward``), and their
  largest activation difference;
- ``fit``: :func:`~spectral_edit.experiments.pipeline.fit_editor` on ``--demos``
  (``--fit-demos`` first ones; cheap to rerun alone: ``--parts fit``);
- ``generation``: greedy generation with the KV cache
  (:func:`~spectral_edit.hf.generation.generate_greedy`) of ``--gen-prompts`` TruthfulQA
  prompts, unedited and under a SEA editor that edits every decoder layer, a warm-up of
  each, then ``--gen-repeats`` back-to-back pairs (order alternating); tokens/s from the
  median, the overhead from the median of the pairs' ratios, in wall and in CPU time (a
  shared host's load drifts by several per cent from run to run), and, on CPU, one more
  edited run whose edit hooks are timed (:func:`_timed_edit`): the edit's own share of
  the run.
  Decoding is fixed-length (no stop strings, EOS disabled for the timing) so both
  decode exactly ``prompts × --gen-tokens`` tokens in batches of the same shapes.

The results go to ``--output`` (JSON) and the same path with ``.md`` (a Markdown table),
both written atomically; parts not run this time are kept from an existing ``--output``.

    python benchmarks/perf.py --demos runs/halu100.jsonl --output benchmarks/results/perf_cpu.json
    python benchmarks/perf.py --demos runs/halu100.jsonl --parts fit \\
        --output benchmarks/results/perf_cpu.json    # re-measure the fit only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_lmeval import agreement  # noqa: E402
from fit_speed import plain_forward, positive_sequences  # noqa: E402

from spectral_edit import SeaOptions, load_model, read_demos  # noqa: E402
from spectral_edit.core.options import Neutral  # noqa: E402
from spectral_edit.data import load_mc_task, resolve  # noqa: E402
from spectral_edit.demos.prompts import qa_prompt  # noqa: E402
from spectral_edit.editors.registry import load_editor  # noqa: E402
from spectral_edit.evaluate.truthfulqa import evaluate_truthfulqa  # noqa: E402
from spectral_edit.experiments.pipeline import fit_editor  # noqa: E402
from spectral_edit.hf.capture import capture  # noqa: E402
from spectral_edit.hf.generation import generate_greedy  # noqa: E402
from spectral_edit.hf.hooks import add_hooks  # noqa: E402
from spectral_edit.hf.layers import find_decoder_layers, parse_layers, site_modules  # noqa: E402
from spectral_edit.util.atomic import atomic_write_text  # noqa: E402
from spectral_edit.util.report import markdown_table, read_json, write_json  # noqa: E402

PARTS = ("truthfulqa", "capture", "fit", "generation")
DEFAULT_LMEVAL_VENV = "/work/venv-lmeval"
MIB = 1024 * 1024
T = TypeVar("T")


# --------------------------------------------------------------------------- memory


def _status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (``VmHWM``, ``VmRSS``), or None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peaks(device: torch.device) -> bool:
    """Reset the process's peak RSS (and CUDA's peak allocation); whether RSS could be."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def read_peaks(device: torch.device, resettable: bool) -> dict[str, Any]:
    """Peak RSS since the last reset (MiB; the process's whole peak where it could not be
    reset, flagged), and CUDA's peak allocation (MiB, None on a CPU)."""
    hwm = _status_kib("VmHWM")
    if hwm is None:  # not Linux: ru_maxrss (KiB on Linux, bytes on macOS), never reset
        scale = 1 if sys.platform == "darwin" else 1024
        hwm, resettable = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale // 1024, False
    out: dict[str, Any] = {"peak_rss_mib": round(hwm / 1024, 1), "rss_reset": resettable}
    out["cuda_peak_mib"] = (
        round(torch.cuda.max_memory_allocated(device) / MIB, 1) if device.type == "cuda" else None
    )
    return out


def measured(fn: Callable[[], T], device: torch.device) -> tuple[T, dict[str, Any]]:
    """``fn()`` with its wall time (s), the process's CPU time (s, all threads) and its
    peak memory (:func:`read_peaks`)."""
    resettable = reset_peaks(device)
    started, cpu_started = time.perf_counter(), time.process_time()
    value = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    return value, {
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        **read_peaks(device, resettable),
    }


# --------------------------------------------------------------------------- parts


def _load(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    """The model on ``--device`` and what loading cost."""
    device = torch.device(args.device)
    started = time.perf_counter()
    model, tokenizer = load_model(args.model, dtype=args.dtype)
    torch.nn.Module.to(model, device)
    info = {
        "load_seconds": round(time.perf_counter() - started, 2),
        "rss_after_load_mib": round((_status_kib("VmRSS") or 0) / 1024, 1),
    }
    return model, tokenizer, info


def _lmeval_model_dir(args: argparse.Namespace) -> Path:
    if args.lmeval_model_dir:
        return Path(args.lmeval_model_dir)
    if Path(args.model).is_dir():
        return Path(args.model)
    from spectral_edit.hf.gguf_cache import converted_model_dir

    return converted_model_dir(args.model)


def part_truthfulqa(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """Our evaluator and lm-eval on the same first ``--tqa-limit`` questions."""
    device = torch.device(args.device)
    data_file = resolve("truthfulqa/mc_task_v0.json", args.data_dir)
    questions = load_mc_task(data_file)[: args.tqa_limit]
    model, tokenizer, load = _load(args)
    ours, ours_cost = measured(
        lambda: evaluate_truthfulqa(model, tokenizer, questions, batch_size=args.tqa_batch_size),
        device,
    )
    python = Path(args.lmeval_venv) / "bin" / "python"
    if not python.is_file():
        raise SystemExit(
            f"--lmeval-venv {args.lmeval_venv}: no bin/python; create it with "
            "bash benchmarks/setup_lmeval_env.sh"
        )
    lm_dir = out_dir / "lmeval"
    command = [
        str(python),
        str(Path(__file__).resolve().parent / "run_lmeval_truthfulqa.py"),
        str(_lmeval_model_dir(args)),
        "--output-dir", str(lm_dir),
        "--data-dir", str(data_file.parent.parent),
        "--limit", str(len(questions)),
        "--batch-size", str(args.lmeval_batch_size),
        "--device", args.device,
        "--dtype", args.dtype,
    ]  # fmt: skip
    if args.threads:
        command += ["--threads", str(args.threads)]
    started = time.perf_counter()
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"lm-eval run failed (exit {child.returncode}): {' '.join(command)}")
    reference = [json.loads(line) for line in (lm_dir / "per_question.jsonl").open()]
    summary = read_json(lm_dir / "summary.json")
    compared = agreement(ours.per_question, reference)
    return {
        "questions": len(questions),
        "model_load": load,
        "ours": {
            "mc1": ours.summary["mc1"],
            "mc2": ours.summary["mc2"],
            "batch_size": args.tqa_batch_size,
            **ours_cost,
        },
        "lmeval": {
            **compared.pop("lmeval"),
            "seconds": summary["wall_time_s"]["evaluate"],
            "process_seconds": round(time.perf_counter() - started, 2),
            "model_load_seconds": summary["wall_time_s"]["model_load"],
            "batch_size": args.lmeval_batch_size,
            "version": summary["versions"]["lm_eval"],
            # the whole lm-eval process (model load included): os.wait4's ru_maxrss (KiB)
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "cuda_peak_mib": None,
        },
        **compared,
        "speedup": round(summary["wall_time_s"]["evaluate"] / ours_cost["seconds"], 2),
    }


def part_capture(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """Plain ``output_hidden_states`` forward against ``capture`` at the fit's layers."""
    device = torch.device(args.device)
    model, tokenizer, load = _load(args)
    demos = read_demos(args.demos)[: args.capture_demos]
    num_layers = len(find_decoder_layers(model))
    layers = parse_layers(args.fit_layers, num_layers)
    prompts, answers, sequences = positive_sequences(tokenizer, demos)
    # hidden_states' last entry is final-normed: compare below the last layer
    compared = [layer for layer in layers if layer < num_layers - 1]
    batch = args.batch_size

    def plain(n: int | None = None) -> torch.Tensor:
        return plain_forward(model, tokenizer, sequences[:n], compared, batch)

    def captured(n: int | None = None) -> torch.Tensor:
        return capture(model, tokenizer, prompts[:n], answers[:n], layers=layers, batch_size=batch)

    plain(2), captured(2)  # warm-up, untimed
    reference, plain_cost = measured(plain, device)
    ours, capture_cost = measured(captured, device)
    index = [layers.index(layer) for layer in compared]
    difference = float((ours[:, index].cpu() - reference).abs().max()) if compared else None
    return {
        "demonstrations": len(demos),
        "layers": layers,
        "batch_size": batch,
        "mean_tokens_per_sequence": round(sum(map(len, sequences)) / len(sequences), 1),
        "model_load": load,
        "plain_forward": plain_cost,
        "capture": capture_cost,
        "speedup": round(plain_cost["seconds"] / capture_cost["seconds"], 2),
        "max_abs_difference": difference,
        "activation_max_abs": float(reference.abs().max()) if compared else None,
    }


def part_fit(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """``fit_editor`` end to end (neutral answers, captures, SVDs) on the demonstrations."""
    device = torch.device(args.device)
    model, tokenizer, load = _load(args)
    demos = read_demos(args.demos)[: args.fit_demos]
    options = SeaOptions(layers=args.fit_layers)
    editor, cost = measured(
        lambda: fit_editor(model, tokenizer, demos, options, batch_size=args.batch_size), device
    )
    return {
        "demonstrations": len(demos),
        "layers": list(editor.layers),
        "batch_size": args.batch_size,
        "model_load": load,
        "fit": cost,
        "capture_seconds": editor.metadata.get("capture_seconds"),
        "ranks": {str(k): list(v) for k, v in editor.ranks.items()},
    }


@contextlib.contextmanager
def fixed_length(model: Any) -> Iterator[None]:
    """No EOS while timing: every row decodes exactly ``max_new_tokens`` tokens."""
    config = model.generation_config
    saved = config.eos_token_id
    config.eos_token_id = [-1]
    try:
        yield
    finally:
        config.eos_token_id = saved


def _count_decoded(model: Any, run: Callable[[], list[str]]) -> tuple[list[str], int]:
    """``run()`` and the tokens fed back one at a time (decode steps × rows)."""
    fed = [0]

    def count(_key: str, hidden: torch.Tensor) -> None:
        if hidden.shape[1] == 1:
            fed[0] += hidden.shape[0]

    with add_hooks({"embed": model.get_input_embeddings()}, count):
        texts = run()
    return texts, fed[0]


@contextlib.contextmanager
def _timed_edit(model: Any, editor: Any) -> Iterator[list[float]]:
    """``editor`` applied to ``model``, with the seconds spent in its hooks summed into
    the yielded one-item list: a forward hook on each edited module registered before the
    editor's starts a clock, one registered after stops it (hooks run in registration
    order). CPU only: on CUDA the clock would time kernel launches, not the edit."""
    modules = site_modules(model, editor.active_layers, editor.site, editor.layer_path)
    spent = [0.0]
    started: list[float] = []

    def start(_: int, __: torch.Tensor) -> None:
        started.append(time.perf_counter())

    def stop(_: int, __: torch.Tensor) -> None:
        spent[0] += time.perf_counter() - started.pop()

    with add_hooks(modules, start), editor.apply(model), add_hooks(modules, stop):
        yield spent


def part_generation(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """Greedy KV-cache generation, unedited and with every layer edited."""
    device = torch.device(args.device)
    model, tokenizer, load = _load(args)
    num_layers = len(find_decoder_layers(model))
    if args.gen_editor:
        editor: Any = load_editor(args.gen_editor, model)
        editor_source = Path(args.gen_editor).name
        fit_seconds = None
    else:
        demos = read_demos(args.demos)[: args.gen_fit_demos]
        options = SeaOptions(layers="all", neutral=Neutral.PROMPT, centered=True)
        editor, fitted = measured(
            lambda: fit_editor(model, tokenizer, demos, options, batch_size=args.batch_size),
            device,
        )
        editor_source = f"fitted here: layers all, neutral prompt, centred, {len(demos)} demos"
        fit_seconds = fitted["seconds"]
    edited_layers = list(getattr(editor, "active_layers", []))
    if len(edited_layers) != num_layers:
        raise SystemExit(
            f"--gen-editor: the editor edits layers {edited_layers}, not all {num_layers}"
        )
    questions = load_mc_task(resolve("truthfulqa/mc_task_v0.json", args.data_dir))
    prompts = [qa_prompt(q.question) for q in questions[: args.gen_prompts]]
    tokens = len(prompts) * args.gen_tokens

    def generate() -> list[str]:
        return generate_greedy(
            model,
            tokenizer,
            prompts,
            max_new_tokens=args.gen_tokens,
            stops=(),
            batch_size=args.gen_batch_size,
        )

    runs: dict[str, list[dict[str, Any]]] = {"unedited": [], "edited": []}
    texts: dict[str, list[str]] = {}
    with fixed_length(model):
        for name in runs:  # warm-up, untimed; checks that decoding is fixed-length
            with editor.apply(model) if name == "edited" else contextlib.nullcontext():
                texts[name], fed = _count_decoded(model, generate)
            if fed != len(prompts) * (args.gen_tokens - 1):
                raise RuntimeError(f"{name}: {fed} tokens fed back, not fixed-length decoding")
        for repeat in range(args.gen_repeats):  # back-to-back pairs, order alternating
            for name in list(runs)[:: 1 if repeat % 2 == 0 else -1]:
                with editor.apply(model) if name == "edited" else contextlib.nullcontext():
                    _, cost = measured(generate, device)
                runs[name].append(cost)
        edit_seconds = None
        if device.type == "cpu":  # one more edited run, its edit hooks timed
            with _timed_edit(model, editor) as spent:
                _, timed = measured(generate, device)
            edit_seconds = {"in_edit_hooks": round(spent[0], 3), "run": timed["seconds"]}
    out: dict[str, Any] = {
        "prompts": len(prompts),
        "new_tokens_per_prompt": args.gen_tokens,
        "batch_size": args.gen_batch_size,
        "repeats": args.gen_repeats,
        "model_load": load,
        "editor": {
            "source": editor_source,
            "edited_layers": len(edited_layers),
            "num_layers": num_layers,
            "ranks": {str(k): list(v) for k, v in getattr(editor, "ranks", {}).items()},
            "fit_seconds": fit_seconds,
        },
        "prompts_whose_text_changed": sum(
            a != b for a, b in zip(texts["unedited"], texts["edited"], strict=True)
        ),
    }
    for name, costs in runs.items():
        seconds = statistics.median(c["seconds"] for c in costs)
        cuda = [c["cuda_peak_mib"] for c in costs if c["cuda_peak_mib"] is not None]
        out[name] = {
            "seconds": round(seconds, 3),
            "all_seconds": [c["seconds"] for c in costs],
            "cpu_seconds": round(statistics.median(c["cpu_seconds"] for c in costs), 3),
            "all_cpu_seconds": [c["cpu_seconds"] for c in costs],
            "tokens_per_second": round(tokens / seconds, 2),
            "peak_rss_mib": max(c["peak_rss_mib"] for c in costs),
            "rss_reset": all(c["rss_reset"] for c in costs),
            "cuda_peak_mib": max(cuda) if cuda else None,
        }
    for key, clock in (("overhead_percent", "seconds"), ("cpu_overhead_percent", "cpu_seconds")):
        ratios = [
            e[clock] / u[clock] for e, u in zip(runs["edited"], runs["unedited"], strict=True)
        ]
        out[key] = round(100 * (statistics.median(ratios) - 1), 2)
    if edit_seconds is not None:  # the edit's own share of an edited run
        edit_seconds["share_percent"] = round(
            100 * edit_seconds["in_edit_hooks"] / edit_seconds["run"], 2
        )
    out["edit_hooks"] = edit_seconds
    return out


RUNNERS: dict[str, Callable[[argparse.Namespace, Path], dict[str, Any]]] = {
    "truthfulqa": part_truthfulqa,
    "capture": part_capture,
    "fit": part_fit,
    "generation": part_generation,
}


# --------------------------------------------------------------------------- report


def _mem(cost: dict[str, Any]) -> tuple[Any, Any]:
    return cost.get("peak_rss_mib"), cost.get("cuda_peak_mib")


def table_rows(report: dict[str, Any]) -> list[list[Any]]:
    """One row per measurement: what, size, seconds, rate, peak RSS, CUDA peak, notes."""
    parts = {k: v for k, v in report.get("parts", {}).items() if "error" not in v}
    rows: list[list[Any]] = []
    if tqa := parts.get("truthfulqa"):
        n = f"first {tqa['questions']} questions"
        for key, label in (("lmeval", f"lm-eval {tqa['lmeval']['version']}"), ("ours", "ours")):
            side = tqa[key]
            rows.append(
                [
                    f"TruthfulQA MC1/MC2, {label}",
                    n,
                    side["seconds"],
                    f"{tqa['questions'] / side['seconds']:.2f} q/s",
                    *_mem(side),
                    f"MC1 {side['mc1']:.2f}, MC2 {side['mc2']:.2f}",
                ]
            )
        rows[-1][-1] += (
            f"; {tqa['speedup']}× faster; max |Δ log-lik| "
            f"{tqa['max_abs_loglikelihood_diff']:.1e}, MC1 disagreements "
            f"{tqa['mc1_disagreements']}"
        )
    if cap := parts.get("capture"):
        size = f"{cap['demonstrations']} seqs (≈{cap['mean_tokens_per_sequence']:.0f} tok)"
        for key, label in (("plain_forward", "plain forward, output_hidden_states"),
                           ("capture", "capture (shared-prefix cache)")):  # fmt: skip
            side = cap[key]
            rate = f"{cap['demonstrations'] / side['seconds']:.2f} seq/s"
            rows.append([label, size, side["seconds"], rate, *_mem(side), ""])
        diff = cap["max_abs_difference"]
        rows[-1][-1] = f"{cap['speedup']}× faster; max |Δ| {diff:.3g}" if diff is not None else ""
        rows[-1][-1] += f" (activations up to {cap['activation_max_abs']:.3g})" if diff else ""
    if fit := parts.get("fit"):
        layers = fit["layers"]
        rows.append(
            [
                "fit_editor (answers, captures, SVDs)",
                f"{fit['demonstrations']} demos, {len(layers)} layers",
                fit["fit"]["seconds"],
                f"{fit['demonstrations'] / fit['fit']['seconds']:.2f} demos/s",
                *_mem(fit["fit"]),
                f"capture {fit['capture_seconds']:.1f} s" if fit.get("capture_seconds") else "",
            ]
        )
    if gen := parts.get("generation"):
        size = f"{gen['prompts']} prompts × {gen['new_tokens_per_prompt']} tokens"
        edited = gen["editor"]["edited_layers"]
        for key, label in (("unedited", "generation, unedited"),
                           ("edited", f"generation, SEA on {edited}/{edited} layers")):  # fmt: skip
            side = gen[key]
            rate = f"{side['tokens_per_second']:.1f} tok/s"
            rows.append([label, size, side["seconds"], rate, *_mem(side), ""])
        hooks = gen.get("edit_hooks")
        inside = (
            f"; {hooks['share_percent']:.1f} % of an edited run inside the edit hooks"
            if hooks
            else ""
        )
        cpu = gen.get("cpu_overhead_percent")
        rows[-1][-1] = (
            f"overhead {gen['overhead_percent']:+.1f} % wall"
            + (f", {cpu:+.1f} % CPU time" if cpu is not None else "")
            + f" (median of {gen['repeats']} pairs){inside}; "
            f"{gen['prompts_whose_text_changed']}/{gen['prompts']} texts changed"
        )
    return rows


HEADERS = ["measurement", "size", "seconds", "rate", "peak RSS (MiB)", "CUDA peak (MiB)", "notes"]


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table, with the machine under it."""
    machine = report["machine"]
    lines = [
        f"# Performance: {report['model']} ({report['dtype']}, {report['device']})\n",
        markdown_table(HEADERS, table_rows(report)),
        f"Machine: {machine['platform']}, {machine['cpus']} CPUs, torch {machine['torch']}"
        f" ({machine['torch_threads']} threads). Peak RSS is per measurement (reset before"
        " each) in the part's own process, model included; lm-eval's is its whole process.",
    ]
    for name, part in report.get("parts", {}).items():
        if "error" in part:
            lines.append(f"- {name}: {part['error']}")
            continue
        lines.append(
            f"- {name}: measured {part.get('measured_at')}, load average "
            f"{part.get('load_average_before')} → {part.get('load_average_after')}"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- driver


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demos", type=Path, required=True, help="demonstrations (.jsonl)")
    p.add_argument("--model", default="gemma-3-270m", help="anything load_model accepts")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--data-dir", default=None, help="default: $SEA_DATA_DIR")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    p.add_argument("--output", type=Path, required=True, help="JSON; the table goes to .md")
    p.add_argument("--work-dir", type=Path, default=Path("runs/perf"), help="lm-eval's files")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--batch-size", type=int, default=8, help="capture and fit batch size")
    p.add_argument("--tqa-limit", type=int, default=20)
    p.add_argument("--tqa-batch-size", type=int, default=16)
    p.add_argument("--lmeval-batch-size", type=int, default=8)
    p.add_argument("--lmeval-venv", default=os.environ.get("LMEVAL_VENV", DEFAULT_LMEVAL_VENV))
    p.add_argument("--lmeval-model-dir", default=None, help="HF folder for lm-eval")
    p.add_argument("--capture-demos", type=int, default=40)
    p.add_argument("--fit-demos", type=int, default=None, help="default: all")
    p.add_argument("--fit-layers", default="last-8")
    p.add_argument("--gen-editor", default=None, help="editor file editing every layer")
    p.add_argument("--gen-fit-demos", type=int, default=100)
    p.add_argument("--gen-prompts", type=int, default=16)
    p.add_argument("--gen-tokens", type=int, default=32)
    p.add_argument("--gen-batch-size", type=int, default=8)
    p.add_argument("--gen-repeats", type=int, default=5)
    p.add_argument("--child", choices=PARTS, help=argparse.SUPPRESS)
    p.add_argument("--child-output", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.part_list = [x.strip() for x in args.parts.split(",") if x.strip()]
    unknown = sorted(set(args.part_list) - set(PARTS))
    if unknown or not args.part_list:
        p.error(f"--parts: unknown {unknown}; choose from {', '.join(PARTS)}")
    if not args.demos.is_file():
        p.error(f"--demos {args.demos}: no such file")
    for name in ("gen_tokens", "gen_repeats", "gen_prompts", "capture_demos", "tqa_limit"):
        if getattr(args, name) < 1 or (name == "gen_tokens" and args.gen_tokens < 2):
            p.error(f"--{name.replace('_', '-')} must be positive (gen-tokens >= 2)")
    return args


def _run_child(argv: list[str], part: str, tmp: Path) -> tuple[dict[str, Any], float]:
    """Run one part in a child process; its result and its whole-process peak RSS (MiB)."""
    result = tmp / f"{part}.json"
    command = [sys.executable, str(Path(__file__).resolve()), *argv]
    command += ["--child", part, "--child-output", str(result)]
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0 or not result.is_file():
        return {"error": f"the {part} part failed (exit {code}); see its output above"}, 0.0
    return read_json(result), round(usage.ru_maxrss / 1024, 1)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        out_dir = args.work_dir
        before = os.getloadavg()
        result = RUNNERS[args.child](args, out_dir)
        result["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        result["load_average_before"] = [round(x, 2) for x in before]
        result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        write_json(args.child_output, result)
        return 0
    report: dict[str, Any] = {"parts": {}}
    if args.output.is_file():
        report = read_json(args.output)
    report.update(
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        demonstrations=args.demos.name,
        machine={
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": args.threads or torch.get_num_threads(),
            "torch": torch.__version__,
        },
    )
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.part_list:
            print(f"[perf] {part} ...", flush=True)
            result, peak = _run_child(argv, part, Path(tmp))
            failed |= "error" in result
            result["process_peak_rss_mib"] = peak
            report["parts"][part] = result
            write_json(args.output, report)
            atomic_write_text(args.output.with_suffix(".md"), markdown(report))
    print(markdown(report))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
