"""Failure catalogue, item 8: fuzzing the demonstrations reader and the data parsers.

For random bytes, random byte-level mutations of valid hand-written files, and random
structural mutations (a field's value replaced by any JSON value, a field dropped, a CSV
cell replaced by any text), every reader either returns well-formed records or raises the
project's own error naming the file (:class:`DemoFormatError` for demonstrations,
:class:`DataFormatError` for benchmark files), and never hangs (hypothesis ``deadline``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spectral_edit.data import (
    DataFormatError,
    load_bbq,
    load_crows_pairs,
    load_gsm8k,
    load_halueval_qa,
    load_mc_task,
    load_mmlu_slice,
    load_query_choices,
    load_truthfulqa_csv,
    load_winogrande,
)
from spectral_edit.data.halueval import load_halueval_general
from spectral_edit.data.readers import iter_csv_records, iter_json_array, iter_json_lines
from spectral_edit.demos.format import DemoFormatError, Demonstration, read_demos

pytestmark = pytest.mark.filterwarnings(
    "ignore::spectral_edit.demos.format.DuplicateDemonstrationsWarning"
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "data"

DEMOS_SEED = (
    '{"prompt": "Q: Is the sky green?\\nA:", "positive": "No.", "negative": "Yes."}\n'
    "\n"
    '{"prompt": "Q: Où est Paris ?\\nA:", "positive": "En France.", "negative": "Au Japon.",'
    ' "neutral": "Je ne sais pas."}\n'
    '{"prompt": "p \\u2028 q", "positive": "x", "negative": "y", "neutral": null}\n'
).encode()
"""A hand-written valid demonstrations file: a blank line, Unicode, an escape, a null."""


def _records(load: Callable[[Path], Any]) -> Callable[[Path], list[Any]]:
    """A raw reader as a loader: the records it yields, as a list."""
    return lambda path: list(load(path))


@dataclass(frozen=True)
class Reader:
    """One reader under test: a valid seed file, how to load it, what it may raise."""

    name: str
    seed: bytes
    load: Callable[[Path], list[Any]]
    error: type[Exception] = DataFormatError
    kind: str = "jsonl"  # how structural mutations rewrite it: jsonl, json or csv


def _fixture(relpath: str) -> bytes:
    return (FIXTURES / relpath).read_bytes()


READERS = [
    Reader("demos", DEMOS_SEED, read_demos, DemoFormatError),
    Reader("json lines", _fixture("halueval/general_data.json"), _records(iter_json_lines)),
    Reader(
        "json array", _fixture("truthfulqa/mc_task.json"), _records(iter_json_array), kind="json"
    ),
    Reader(
        "csv",
        _fixture("truthfulqa/TruthfulQA.csv"),
        _records(partial(iter_csv_records, columns=("Type", "Question"))),
        kind="csv",
    ),
    Reader("truthfulqa mc", _fixture("truthfulqa/mc_task.json"), load_mc_task, kind="json"),
    Reader(
        "truthfulqa csv", _fixture("truthfulqa/TruthfulQA.csv"), load_truthfulqa_csv, kind="csv"
    ),
    Reader(
        "truthfulqa fold",
        _fixture("truthfulqa/folds/TruthfulQA-2.csv"),
        load_truthfulqa_csv,
        kind="csv",
    ),
    Reader("halueval qa", _fixture("halueval/qa_data.json"), load_halueval_qa),
    Reader("halueval general", _fixture("halueval/general_data.json"), load_halueval_general),
    Reader("bbq", _fixture("bbq/official/Age.jsonl"), load_bbq),
    Reader(
        "crows pairs",
        _fixture("crows_pairs/crows_pairs_anonymized.csv"),
        load_crows_pairs,
        kind="csv",
    ),
    Reader("control query/choices", _fixture("control/arc_easy.jsonl"), load_query_choices),
    Reader("control winogrande", _fixture("control/winogrande.jsonl"), load_winogrande),
    Reader("control mmlu", _fixture("control/mmlu_slice.jsonl"), load_mmlu_slice),
    Reader("control gsm8k", _fixture("control/gsm8k_test.jsonl"), load_gsm8k),
]
BY_NAME = {reader.name: reader for reader in READERS}

FUZZ = settings(
    max_examples=50,
    deadline=timedelta(seconds=2),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
"""Fifty examples per reader and strategy (2,300 in all, seconds on a laptop) find the
crashes quickly; the deadline catches a reader that hangs."""

TOKENS = [
    b'"', b"{", b"}", b"[", b"]", b",", b":", b"\n", b"\r\n", b"\r", b" ", b"\\", b"\x00",
    b"\xef\xbb\xbf", b"\xff", b"\xc3", b"\\ud800", b"\\u0000", b"null", b"true", b"1e999",
    b"-0", b"NaN", b"9" * 5000, b"[" * 3000, b'"question": 1, "question": 2', b'""',
]  # fmt: skip
"""Byte strings that tend to reach the readers' corners."""

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.text(st.characters(categories=("Cs", "Lu")), max_size=4),  # lone surrogates too
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


# --------------------------------------------------------------------------- mutations


@st.composite
def byte_mutations(draw: st.DrawFn, seed: bytes) -> bytes:
    """``seed`` after one to four random edits: overwrite, insert, delete, truncate."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["overwrite", "insert", "delete", "truncate", "line"]))
        if op == "overwrite" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.sampled_from(TOKENS) | st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 40))]
        elif op == "truncate":
            del data[at:]
        else:  # repeat a whole line elsewhere
            lines = bytes(data).split(b"\n")
            lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(lines)))
            data = bytearray(b"\n".join(lines))
    return bytes(data)


def _set_somewhere(draw: st.DrawFn, obj: Any) -> Any:
    """``obj`` with one value at a random depth replaced by any JSON value, or a key
    dropped."""
    if isinstance(obj, dict) and obj and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(obj)))
        if draw(st.integers(0, 3)) == 0:
            return {k: v for k, v in obj.items() if k != key}
        return {**obj, key: _set_somewhere(draw, obj[key])}
    if isinstance(obj, list) and obj and draw(st.booleans()):
        at = draw(st.integers(0, len(obj) - 1))
        return [*obj[:at], _set_somewhere(draw, obj[at]), *obj[at + 1 :]]
    return draw(JSON_VALUES)


@st.composite
def structural_mutations(draw: st.DrawFn, reader: Reader) -> bytes:
    """``reader.seed`` with one record's content changed while the syntax stays valid."""
    text = reader.seed.decode("utf-8-sig")
    if reader.kind == "csv":
        rows = list(csv.reader(io.StringIO(text, newline="")))
        at = draw(st.integers(0, len(rows) - 1))
        row = list(rows[at])
        if row and draw(st.booleans()):
            row[draw(st.integers(0, len(row) - 1))] = draw(st.text(max_size=30))
        else:
            row.append(draw(st.text(max_size=10)))
        rows[at] = row
        out = io.StringIO(newline="")
        csv.writer(out).writerows(rows)
        return out.getvalue().encode("utf-8", "surrogatepass")
    if reader.kind == "json":
        items = json.loads(text)
        return json.dumps(_set_somewhere(draw, items), indent=1).encode("utf-8", "surrogatepass")
    lines = text.split("\n")
    filled = [i for i, line in enumerate(lines) if line.strip()]
    at = draw(st.sampled_from(filled))
    lines[at] = json.dumps(_set_somewhere(draw, json.loads(lines[at])))
    return "\n".join(lines).encode("utf-8", "surrogatepass")


# --------------------------------------------------------------------------- the property


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _check(reader: Reader, folder: Path, data: bytes) -> None:
    """Reading ``data`` gives well-formed records or ``reader.error`` naming the file."""
    path = folder / ("f.csv" if reader.kind == "csv" else "f.jsonl")
    path.write_bytes(data)
    try:
        records = reader.load(path)
    except reader.error as error:
        assert str(error).startswith(f"{path}"), error
        return
    assert isinstance(records, list)
    if reader.error is DemoFormatError:
        assert records and all(isinstance(d, Demonstration) for d in records)
        assert all(d.prompt.strip() and d.positive.strip() and d.negative.strip() for d in records)
    for record in records:  # everything read is text that can be written back out
        _encodable(record)


def _encodable(value: Any) -> None:
    for text in _strings(value):
        text.encode("utf-8")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)
    elif hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            yield from _strings(getattr(value, name))


def test_seeds_are_valid(folder: Path) -> None:
    for reader in READERS:
        path = folder / ("seed.csv" if reader.kind == "csv" else "seed.jsonl")
        path.write_bytes(reader.seed)
        assert reader.load(path), reader.name


@pytest.mark.parametrize("name", BY_NAME)
@FUZZ
@given(data=st.binary(max_size=600) | st.text(max_size=300).map(lambda t: t.encode()))
def test_random_bytes(folder: Path, name: str, data: bytes) -> None:
    _check(BY_NAME[name], folder, data)


@pytest.mark.parametrize("name", BY_NAME)
@FUZZ
@given(choice=st.data())
def test_byte_mutations_of_a_valid_file(folder: Path, name: str, choice: st.DataObject) -> None:
    reader = BY_NAME[name]
    _check(reader, folder, choice.draw(byte_mutations(reader.seed)))


@pytest.mark.parametrize("name", BY_NAME)
@FUZZ
@given(choice=st.data())
def test_structural_mutations_of_a_valid_file(
    folder: Path, name: str, choice: st.DataObject
) -> None:
    reader = BY_NAME[name]
    _check(reader, folder, choice.draw(structural_mutations(reader)))
