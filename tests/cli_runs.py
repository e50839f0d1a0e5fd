"""The bias commands on the hand-written fixtures, shared by the tiny-model CLI tests and
the real-model tests: each run must exit 0 and leave its summary."""

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from spectral_edit.cli.app import app

FIXTURES = Path(__file__).parent / "fixtures" / "data"
CROWS_FIXTURE = FIXTURES / "crows_pairs" / "crows_pairs_anonymized.csv"


def _invoke(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output


def eval_bbq_fixture(out: Path, model_args: list[str]) -> dict[str, Any]:
    """`sea eval bbq` on the fixture items (2 held out as demonstrations); its summary."""
    _invoke(
        ["eval", "bbq", *model_args, "--held-out-from", "2", "--data-dir", str(FIXTURES)]
        + ["--out", str(out)]
    )
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["overall"]) == {"ambig", "disambig"}
    return summary


def eval_crows_fixture(out: Path, model_args: list[str]) -> tuple[dict, list[dict]]:
    """`sea eval crows-pairs` on the fixture CSV; its summary and per-pair rows."""
    _invoke(["eval", "crows-pairs", *model_args, "--file", str(CROWS_FIXTURE), "--out", str(out)])
    rows = [json.loads(x) for x in (out / "per_pair.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["n"] == len(rows) > 0
    return summary, rows


def compare_args(model: Path, demos: Path, data_dir: Path, out: Path) -> list[Any]:
    """A small `sea compare` run on the fixtures: no method but mean-difference steering,
    one control task of 2 items, no harm texts, neutral = the prompt's last token."""
    return [
        "compare",
        *("--model", model, "--demos", demos, "--methods", "none,mean-diff"),
        *("--mc-file", "mc_task.json", "--data-dir", data_dir),
        *("--control-tasks", "arc_easy", "--control-limit", "2", "--harm-texts", "0"),
        *("--neutral", "prompt", "--out", out),
    ]
