"""Benchmark data: locate (and, when pinned, download) files, then parse them.

Files live in one data directory (``--data-dir`` / ``$SEA_DATA_DIR`` / user cache), under
fixed relative paths (:data:`KNOWN_FILES`, in :mod:`.registry`); :func:`resolve` (in
:mod:`.locate`) finds them, downloading pinned ones.  :mod:`.readers` holds the validated
JSON/CSV readers the parsers share, :mod:`.errors` the exceptions.  One module per
dataset turns a file into a list of frozen dataclasses and reports malformed input as
:class:`DataFormatError` naming the file and line:

- :mod:`.truthfulqa` -- multiple-choice questions, the question CSV, the SEA 2-fold split;
- :mod:`.halueval` -- HaluEval QA (knowledge, question, right and hallucinated answers);
- :mod:`.bbq` -- BBQ items and the unknown / biased option of each;
- :mod:`.crows_pairs` -- CrowS-Pairs sentence pairs;
- :mod:`.control` -- general-capability multiple-choice tasks and GSM8K.
"""

from .bbq import BBQItem, biased_index, load_bbq, load_bbq_dir, unknown_index
from .control import (
    CONTROL_TASKS,
    ChoiceItem,
    GSM8KItem,
    load_control_task,
    load_gsm8k,
    load_mmlu_slice,
    load_query_choices,
    load_winogrande,
)
from .crows_pairs import CrowsPair, load_crows_pairs
from .errors import ChecksumMismatch, DataFileMissing, DataFormatError, DownloadError
from .halueval import HaluEvalQA, load_halueval_qa
from .locate import data_dir, download, resolve
from .registry import BBQ_CATEGORIES, KNOWN_FILES, RemoteFile
from .truthfulqa import (
    QA_PRIMER,
    MCQuestion,
    TruthfulQARow,
    load_fold,
    load_mc_task,
    load_truthfulqa_csv,
    normalize_question,
    split_mc_by_fold,
)

__all__ = [
    "BBQ_CATEGORIES",
    "CONTROL_TASKS",
    "KNOWN_FILES",
    "QA_PRIMER",
    "BBQItem",
    "ChecksumMismatch",
    "ChoiceItem",
    "CrowsPair",
    "DataFileMissing",
    "DataFormatError",
    "DownloadError",
    "GSM8KItem",
    "HaluEvalQA",
    "MCQuestion",
    "RemoteFile",
    "TruthfulQARow",
    "biased_index",
    "data_dir",
    "download",
    "load_bbq",
    "load_bbq_dir",
    "load_control_task",
    "load_crows_pairs",
    "load_fold",
    "load_gsm8k",
    "load_halueval_qa",
    "load_mc_task",
    "load_mmlu_slice",
    "load_query_choices",
    "load_truthfulqa_csv",
    "load_winogrande",
    "normalize_question",
    "resolve",
    "split_mc_by_fold",
    "unknown_index",
]
