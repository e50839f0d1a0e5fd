"""``sea joint-study``: one editor fitted on pooled truthfulness + bias demonstrations
against the two specialised editors, alone and composed (resumable)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..core.options import Feature, Neutral
from ..hf.model_names import DEFAULT_MODEL
from .common import (
    BatchOpt,
    DataDirOpt,
    DtypeOpt,
    McFileOpt,
    ModelOpt,
    console,
    count_option,
    data_errors,
    failing_on,
    too_long,
)
from .compare import JobNeutral
from .tables import print_table


def joint_study(
    model: ModelOpt = DEFAULT_MODEL,
    n_truth: Annotated[int, count_option("HaluEval (truthfulness) demonstrations.")] = 100,
    n_bias: Annotated[int, count_option("BBQ (bias) demonstrations.")] = 100,
    tqa_limit: Annotated[
        int | None,
        count_option("TruthfulQA questions scored (default 100, or 'all').", or_all=True),
    ] = 100,
    bbq_limit: Annotated[
        int | None,
        count_option("Held-out BBQ items scored (default 200, or 'all').", or_all=True),
    ] = 200,
    mc_file: McFileOpt = "mc_task_v0.json",
    seed: Annotated[int, typer.Option(help="Seed of the BBQ split and sample.")] = 0,
    truth_layers: Annotated[str, typer.Option(help="Layers of the truthfulness editor.")] = (
        "last-8"
    ),
    bias_layers: Annotated[str, typer.Option(help="Layers of the bias editor.")] = "last-2",
    bias_feature: Annotated[
        Feature, typer.Option(help="Feature map of the bias editor (Φ-SEA).")
    ] = Feature.SQUARED_EXPONENTIAL,
    joint_like: Annotated[
        str, typer.Option(help="Whose options the joint editor uses: truthfulness or bias.")
    ] = "truthfulness",
    neutral: Annotated[
        JobNeutral, typer.Option(help="Neutral answers: generate or prompt.")
    ] = Neutral.GENERATE,
    ratio: Annotated[float, typer.Option(help="Energy ratio r+ = r- of every fit.")] = 0.99,
    pos_rank: Annotated[int | None, typer.Option(help="Fixed k+ (overrides the ratio).")] = None,
    neg_rank: Annotated[int | None, typer.Option(help="Fixed k- (overrides the ratio).")] = None,
    out: Annotated[Path, typer.Option(help="Output folder (reruns resume).")] = Path("runs/joint"),
    batch_size: BatchOpt = 8,
    data_dir: DataDirOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Joint vs specialised editing: TruthfulQA MC1/MC2 and held-out BBQ, unedited and
    under the truthfulness, bias, composed (truthfulness then bias) and joint editors;
    report.md and report.json."""
    from ..experiments.joint_study import (
        BIAS_OPTIONS,
        TRUTH_OPTIONS,
        JointStudyOptions,
        joint_vs_specialised,
    )

    with failing_on(ValueError):
        if joint_like not in ("truthfulness", "bias"):
            raise ValueError(f"--joint-like must be truthfulness or bias, not {joint_like!r}")
        common: dict[str, Any] = {"neutral": neutral, "pos_ratio": ratio, "neg_ratio": ratio}
        common |= {"pos_rank": pos_rank, "neg_rank": neg_rank}
        truth = TRUTH_OPTIONS.replace(layers=truth_layers, **common)
        bias = BIAS_OPTIONS.replace(layers=bias_layers, feature=bias_feature, **common)
        options = JointStudyOptions(
            n_truth=n_truth,
            n_bias=n_bias,
            tqa_limit=tqa_limit,
            bbq_limit=bbq_limit,
            mc_file=mc_file,
            seed=seed,
            truth=truth,
            bias=bias,
            joint=truth if joint_like == "truthfulness" else bias,
            batch_size=batch_size,
        )
    with failing_on(*data_errors(), ValueError), too_long():
        report = joint_vs_specialised(
            model,
            options,
            out_dir=out,
            data_dir=data_dir,
            dtype=dtype,
            echo=console.print,
            progress=True,
        )
    print_table("joint vs specialised editors", report["headers"], report["rows"])
    console.print(f"{report['seconds']:.0f} s; report in {out}/report.md and report.json")
