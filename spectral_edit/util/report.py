"""Results as files and text: JSON / JSON Lines (atomic), table cells, Markdown tables, the
per-layer rank rows of an editor. (Printing to a terminal is the CLI's: ``cli/tables.py``.)"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically (parent folders are created; an
    unwritable place is :class:`~spectral_edit.util.atomic.OutputError`)."""
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return Path(path)


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write one JSON object per line, atomically (as :func:`write_json`)."""
    text = "".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in rows)
    atomic_write_text(path, text)
    return Path(path)


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def fmt(value: Any, digits: int = 1) -> str:
    """A table cell: floats rounded, None/NaN as an em dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def ranks_rows(editor_metadata: Mapping[str, Any]) -> list[list[Any]]:
    """Rows ``layer, k+, k-, top-1 energy ±, kept energy ±, signature`` from editor metadata."""
    rows = []
    for entry in editor_metadata.get("layer_stats", []):
        rows.append(
            [
                entry["layer"],
                entry["pos_rank"],
                entry["neg_rank"],
                f"{entry['pos_energy_top1']:.3f} / {entry['neg_energy_top1']:.3f}",
                f"{entry['pos_energy_kept']:.4f} / {entry['neg_energy_kept']:.4f}",
                f"{entry['signature']:.4g}",
            ]
        )
    return rows


RANK_HEADERS = ["layer", "k+", "k-", "top-1 energy (+/-)", "kept energy (+/-)", "signature"]
