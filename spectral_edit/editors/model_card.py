"""The model card (``README.md``) of an editor pushed to the Hub, generated from the editor.

What the card states is read from the editor itself (its options, its layers and ranks,
the metadata its fit recorded: the base model, the demonstrations file's name and sha256,
the fit options) and from the file pushed (its sha256), never written by hand; a
front matter (``library_name: spectral-edit``, ``base_model`` where the base model is a
Hub id, ``tags``) lets the Hub index it. The card holds no local path: the editor's
metadata holds none (:mod:`spectral_edit.util.identity`).
"""

from __future__ import annotations

import dataclasses
import enum
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..hf.model_names import BUILTIN_MODELS, DEFAULT_MODEL, classify
from ..util.report import RANK_HEADERS, markdown_table, ranks_rows

if TYPE_CHECKING:
    from .base import Editor
    from .hub import HubReference

__all__ = ["LIBRARY_NAME", "SEA_BIBTEX", "editor_card", "hub_base_model"]

LIBRARY_NAME = "spectral-edit"
"""The card's ``library_name``."""

SEA_BIBTEX = """\
@inproceedings{qiu2024spectral,
  title     = {Spectral Editing of Activations for Large Language Model Alignment},
  author    = {Qiu, Yifu and Zhao, Zheng and Ziser, Yftah and Korhonen, Anna and
               Ponti, Edoardo M. and Cohen, Shay B.},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  volume    = {37},
  year      = {2024},
  url       = {https://arxiv.org/abs/2405.09719}
}"""
"""The citation of SEA (Qiu et al., NeurIPS 2024)."""

_BUILTIN_HUB_BASES = {DEFAULT_MODEL: "google/gemma-3-270m"}
"""The Hub model each built-in model is a quantisation of (its card's ``base_model``)."""

_SHOWN_ELSEWHERE = {"model", "model_revision", "model_type", "layer_stats"}
_SHOWN_ELSEWHERE |= {"demonstrations_file", "demonstrations_sha256", "n_demonstrations"}


def hub_base_model(name: str | None) -> str | None:
    """The Hub id of the base model recorded as ``name`` (a Hub id as it is, a built-in
    name as the model it quantises), or ``None`` where it is none (a local folder's name,
    a model type)."""
    if not name:
        return None
    if name in BUILTIN_MODELS:
        return _BUILTIN_HUB_BASES.get(name)
    if name.count("/") != 1:
        return None
    try:
        kind, _ = classify(name)
    except (OSError, ValueError):
        return None
    return name if kind == "hub" else None


def editor_card(editor: Editor, reference: HubReference, *, file_sha256: str) -> str:
    """The model card of ``editor`` pushed as ``reference``, whose file has ``file_sha256``:
    front matter, the editor's options, the fit, the per-layer ranks (SEA), how to load it
    and the citation (see the module docstring)."""
    from huggingface_hub import ModelCard, ModelCardData

    meta = dict(editor.metadata)
    base = hub_base_model(meta.get("model"))
    kind = editor.FORMAT.name.rsplit("/", 1)[-1]
    data = ModelCardData(
        library_name=LIBRARY_NAME,
        base_model=base,
        tags=[LIBRARY_NAME, "activation-editing", "representation-engineering", kind],
    )
    body = "\n".join(
        [
            f"# {type(editor).__name__} for {meta.get('model') or 'a causal LM'}",
            "",
            f"An inference-time activation editor ({_method(editor)}), saved by "
            f"[spectral-edit](https://pypi.org/project/spectral-edit/) as `{reference.filename}`. "
            "It edits the model through forward hooks; the weights are unchanged.",
            "",
            "## Editor",
            "",
            _table(_editor_rows(editor, meta, file_sha256)),
            *_fit_section(meta),
            *_ranks_section(meta),
            "## How to load it",
            "",
            *_loading(reference, meta.get("model") or "MODEL"),
            "## Citation",
            "",
            "Spectral Editing of Activations (Qiu et al., NeurIPS 2024):",
            "",
            "```bibtex",
            SEA_BIBTEX,
            "```",
            "",
        ]
    )
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def _method(editor: Editor) -> str:
    """The method's name, from the first line of the editor module's docstring for the
    baselines (each names its method and paper there)."""
    if editor.FORMAT.name == "spectral-edit/sea":
        return "Spectral Editing of Activations, SEA"
    doc = sys.modules[type(editor).__module__].__doc__ or type(editor).__name__
    return doc.strip().splitlines()[0].split(":")[0].rstrip(".")


def _cell(value: Any) -> str:
    """A table cell: enums by value, tuples comma-joined, ``|`` escaped."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, tuple):
        value = ",".join(map(str, value))
    return "—" if value is None else str(value).replace("|", "\\|")


def _table(rows: Iterable[tuple[str, Any]]) -> str:
    lines = ["| | |", "|---|---|"] + [f"| {key} | {_cell(value)} |" for key, value in rows]
    return "\n".join(lines) + "\n"


def _scalar(value: Any) -> bool:
    if isinstance(value, tuple):
        return all(isinstance(item, (int, str)) for item in value)
    return value is None or isinstance(value, (str, int, float, bool))


def _editor_rows(
    editor: Editor, meta: Mapping[str, Any], file_sha256: str
) -> list[tuple[str, Any]]:
    """Format, file hash, base model, then every option of the editor (its scalar and
    layer-list fields)."""
    rows: list[tuple[str, Any]] = [
        ("format", f"`{editor.FORMAT.name}` version {editor.FORMAT.version}"),
        ("file sha256", f"`{file_sha256}`"),
        ("base model", meta.get("model")),
        ("base model revision", meta.get("model_revision")),
        ("architecture", meta.get("model_type")),
    ]
    for field in dataclasses.fields(editor):  # type: ignore[arg-type]
        value = getattr(editor, field.name)
        if field.name != "metadata" and _scalar(value):
            rows.append((field.name.replace("_", " "), value))
    active = getattr(editor, "active_layers", None)
    if active is not None:
        rows.append(("edited layers", tuple(active)))
    return rows


def _fit_section(meta: Mapping[str, Any]) -> list[str]:
    """The demonstrations (count, file name and sha256) and the fit's recorded options."""
    rows: list[tuple[str, Any]] = [("demonstrations", meta.get("n_demonstrations"))]
    if meta.get("demonstrations_file") is not None:
        rows.append(("demonstrations file", f"`{meta['demonstrations_file']}`"))
        rows.append(("demonstrations sha256", f"`{meta.get('demonstrations_sha256')}`"))
    rows += [
        (key.replace("_", " "), value)
        for key, value in meta.items()
        if key not in _SHOWN_ELSEWHERE and not key.endswith("_seconds") and _scalar(value)
    ]
    return ["## Fit", "", _table(rows)]


def _ranks_section(meta: Mapping[str, Any]) -> list[str]:
    """Per-layer ranks and spectra (editors whose fit recorded them: SEA)."""
    rows = ranks_rows(meta)
    if not rows:
        return []
    return ["## Ranks and spectra per layer", "", markdown_table(RANK_HEADERS, rows)]


def _loading(reference: HubReference, model: str) -> list[str]:
    """Python and CLI snippets that load this editor from the Hub onto ``model``, the
    model recorded at fit time (a built-in name or Hub id loads as it is written)."""
    return [
        "```python",
        "from spectral_edit import load_editor, load_model",
        "",
        f'model, tokenizer = load_model("{model}")',
        f'editor = load_editor("{reference}", model)',
        f'# or: load_editor("{reference.repo_id}", model, filename="{reference.filename}"'
        + (f', revision="{reference.revision}")' if reference.revision else ")"),
        "with editor.apply(model):",
        "    ...  # generate or score as usual: the edit is on inside the block",
        "```",
        "",
        "```bash",
        "pip install spectral-edit",
        f"sea info {reference}",
        f'sea generate --model {model} --editor {reference} "Q: What happens if you crack '
        'your knuckles a lot?\\nA:"',
        "```",
        "",
    ]
