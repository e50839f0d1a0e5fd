"""Failure catalogue, item 1 (data side): benchmark files and their parsers.

The JSON Lines, JSON array and CSV readers (and so every dataset parser) accept and refuse
what the demonstrations reader does: a UTF-8 BOM is accepted by both; duplicate JSON keys,
lone surrogate escapes and non-UTF-8 bytes are refused by both, naming the file and line
(and, for bad bytes, the byte offset in the file). Through the CLI a malformed benchmark
file is exit 2 with that message, before any model is loaded, and no output is written.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from spectral_edit.data import (
    DataFileMissing,
    DataFormatError,
    load_bbq,
    load_crows_pairs,
    load_halueval_qa,
    load_mc_task,
    load_query_choices,
    load_truthfulqa_csv,
)
from spectral_edit.data.readers import iter_csv_records, iter_json_array, iter_json_lines
from spectral_edit.demos.format import DemoFormatError, read_demos
from tests.failures.refusals import assert_nothing_written, assert_refused, run_cli

FIXTURES = Path(__file__).parent.parent / "fixtures" / "data"
HALUEVAL = FIXTURES / "halueval" / "qa_data.json"
MC_TASK = FIXTURES / "truthfulqa" / "mc_task.json"
FOLD_1 = FIXTURES / "truthfulqa" / "folds" / "TruthfulQA-1.csv"
CROWS = FIXTURES / "crows_pairs" / "crows_pairs_anonymized.csv"
ARC = FIXTURES / "control" / "arc_easy.jsonl"
BBQ_AGE = FIXTURES / "bbq" / "official" / "Age.jsonl"
DEMO = {"prompt": "Q: p?\nA:", "positive": "yes.", "negative": "no."}

PARSERS: dict[str, tuple[Path, Callable[[Path], list[Any]]]] = {
    "halueval (JSON Lines)": (HALUEVAL, load_halueval_qa),
    "bbq (JSON Lines)": (BBQ_AGE, load_bbq),
    "arc_easy (JSON Lines)": (ARC, load_query_choices),
    "mc_task (JSON array)": (MC_TASK, load_mc_task),
    "truthfulqa fold (CSV)": (FOLD_1, load_truthfulqa_csv),
    "crows_pairs (CSV)": (CROWS, load_crows_pairs),
}
"""A fixture file and its parser, of each reader kind."""


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEA_OFFLINE", "1")
    monkeypatch.delenv("SEA_DATA_DIR", raising=False)


def _copy(source: Path, folder: Path, data: bytes | None = None) -> Path:
    """``source`` copied into ``folder`` (with ``data`` instead of its bytes if given)."""
    target = folder / source.name
    target.write_bytes(source.read_bytes() if data is None else data)
    return target


def _refused(load: Callable[[Path], Any], path: Path) -> DataFormatError:
    with pytest.raises(DataFormatError) as info:
        load(path)
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}:")
    return info.value


# --------------------------------------------------------------------------- BOM


@pytest.mark.parametrize("case", PARSERS)
def test_a_bom_is_accepted_by_every_parser(tmp_path: Path, case: str) -> None:
    source, load = PARSERS[case]
    data = source.read_bytes()
    assert not data.startswith(b"\xef\xbb\xbf")
    assert load(_copy(source, tmp_path, b"\xef\xbb\xbf" + data)) == load(source)


def test_a_bom_is_accepted_by_the_demos_reader_as_by_the_data_readers(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(DEMO).encode() + b"\n")
    assert [obj for _, obj in iter_json_lines(path)] == [DEMO]
    assert len(read_demos(path)) == 1


# --------------------------------------------------------------------------- duplicate keys


def _with_duplicate_key(text: str, key: str) -> str:
    """``text`` with the first ``"key":`` of line 2 onwards written twice (same value)."""
    lines = text.split("\n")
    at = next(i for i, line in enumerate(lines) if i >= 1 and f'"{key}":' in line)
    head, _, tail = lines[at].partition(f'"{key}":')
    value = json.JSONDecoder().raw_decode(tail.lstrip())[0]
    lines[at] = f'{head}"{key}": {json.dumps(value)}, "{key}":{tail}'
    return "\n".join(lines)


@pytest.mark.parametrize(
    ("case", "key"),
    [("halueval (JSON Lines)", "question"), ("bbq (JSON Lines)", "label"),
     ("arc_easy (JSON Lines)", "gold"), ("mc_task (JSON array)", "question")],
)  # fmt: skip
def test_duplicate_json_keys_are_refused_naming_the_line(
    tmp_path: Path, case: str, key: str
) -> None:
    source, load = PARSERS[case]
    text = _with_duplicate_key(source.read_text(encoding="utf-8"), key)
    line = next(i for i, s in enumerate(text.split("\n"), 1) if s.count(f'"{key}":') == 2)
    path = _copy(source, tmp_path, text.encode())
    error = _refused(load, path)
    assert f"duplicate key {key!r}" in error.reason
    if case != "mc_task (JSON array)":
        assert error.line == line
    else:  # the line the array element starts on
        assert error.line is not None and error.line <= line


def test_duplicate_keys_are_refused_by_the_demos_reader_too(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "prompt": "b", "positive": "x", "negative": "y"}\n')
    with pytest.raises(DemoFormatError, match="duplicate key 'prompt'"):
        read_demos(path)


def test_a_lone_surrogate_escape_is_refused_in_nested_lists(tmp_path: Path) -> None:
    path = tmp_path / "arc_easy.jsonl"
    path.write_text('{"query": "q", "choices": ["a", "b\\udc00"], "gold": 0}\n')
    error = _refused(load_query_choices, path)
    assert error.line == 1 and "lone UTF-16 surrogate" in error.reason
    pair = tmp_path / "ok.jsonl"  # a proper surrogate pair is one character
    pair.write_text('{"query": "q", "choices": ["a", "\\ud83d\\ude00"], "gold": 0}\n')
    assert load_query_choices(pair)[0].continuations[1] == " \U0001f600"


# --------------------------------------------------------------------------- non-UTF-8


@pytest.mark.parametrize("case", PARSERS)
def test_non_utf8_bytes_name_the_line_and_the_file_offset(tmp_path: Path, case: str) -> None:
    source, load = PARSERS[case]
    data = source.read_bytes()
    # Blank lines (skipped by every reader) put the bad byte past the first read chunk:
    # the CSV reader used to report an offset relative to the chunk.
    second_line = data.index(b"\n") + 1
    bad = data[:second_line] + b"\n" * 20_000 + data[second_line:].replace(b"e", b"\xe9", 1)
    path = _copy(source, tmp_path, bad)
    offset = bad.index(b"\xe9")
    error = _refused(load, path)
    assert f"byte 0xe9 at byte offset {offset}" in error.reason
    assert error.line == bad.count(b"\n", 0, offset) + 1


def test_csv_offsets_are_the_files_own_past_the_first_read_chunk(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    rows = b"".join(b"row %d,value %d\n" % (i, i) for i in range(3000))
    path.write_bytes(b"a,b\n" + rows + b"caf\xe9,x\n")
    with pytest.raises(DataFormatError) as info:
        list(iter_csv_records(path, ["a", "b"]))
    offset = path.read_bytes().index(b"\xe9")
    assert f"byte offset {offset}" in info.value.reason
    assert info.value.line == 3002


# --------------------------------------------------------------------------- malformed lines


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ('{"a": 1}\n{"a": \n', 2, "invalid JSON"),
        ('{"a": 1}\n\n' + "[" * 100_000 + "\n", 3, "nested too deeply"),
        ('{"a": ' + "9" * 5000 + "}\n", 1, "invalid JSON"),
        ('{"a": 1}\n"text"\n', 2, "expected a JSON object, got str"),
    ],
    ids=["truncated", "deep nesting", "huge integer", "not an object"],
)
def test_malformed_json_lines_name_the_line(
    tmp_path: Path, text: str, line: int, fragment: str
) -> None:
    path = tmp_path / "f.jsonl"
    path.write_text(text)
    error = _refused(lambda p: list(iter_json_lines(p)), path)
    assert error.line == line and fragment in error.reason


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ('[\n {"a": 1},\n {"a": }\n]', 3, "invalid JSON"),
        ('[\n {"a": 1},\n ' + "[" * 100_000, 3, "nested too deeply"),
        ('[\n {"a": 1}\n {"a": 2}\n]', 3, "expected ',' or ']'"),
        ('[{"a": 1}]\n[]', 2, "unexpected data after the JSON array"),
    ],
    ids=["bad element", "deep nesting", "missing comma", "trailing data"],
)
def test_malformed_json_arrays_name_the_line(
    tmp_path: Path, text: str, line: int, fragment: str
) -> None:
    path = tmp_path / "f.json"
    path.write_text(text)
    error = _refused(lambda p: list(iter_json_array(p)), path)
    assert error.line == line and fragment in error.reason


@pytest.mark.parametrize(
    ("rows", "line", "fragment"),
    [
        ("a,b\n1,2\n3,4,5\n", 3, "row has 3 fields, header has 2"),
        ('a,b\n1,2\n"' + "x" * 200_000 + '",3\n', 3, "CSV syntax error"),
        ("", 1, "empty file"),
        ("x,y\n1,2\n", 1, "header lacks column(s) ['a', 'b']"),
    ],
    ids=["field count", "huge field", "empty", "header"],
)
def test_malformed_csv_rows_name_the_line(
    tmp_path: Path, rows: str, line: int, fragment: str
) -> None:
    path = tmp_path / "f.csv"
    path.write_text(rows)
    error = _refused(lambda p: list(iter_csv_records(p, ["a", "b"])), path)
    assert error.line == line and fragment in error.reason


@pytest.mark.parametrize("case", PARSERS)
def test_a_missing_file_or_a_directory_is_data_file_missing(tmp_path: Path, case: str) -> None:
    _, load = PARSERS[case]
    with pytest.raises(DataFileMissing, match="no such file"):
        load(tmp_path / "absent.json")
    with pytest.raises(DataFileMissing, match="is a directory"):
        load(tmp_path)


# --------------------------------------------------------------------------- CLI


def _data_dir(folder: Path) -> Path:
    """A data directory holding copies of the fixture files."""
    root = folder / "data"
    shutil.copytree(FIXTURES, root)
    return root


def test_cli_sea_demos_refuses_a_malformed_halueval_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    root = _data_dir(tmp_path)
    bad = root / "halueval" / "qa_data.json"
    bad.write_text(_with_duplicate_key(bad.read_text(encoding="utf-8"), "question"))
    (tmp_path / "demos.jsonl").write_bytes(b"earlier demonstrations\n")
    args = ["demos", "halueval", "--source", "full", "--data-dir", "data", "--out", "demos.jsonl"]
    assert_refused(run_cli(args), "data/halueval/qa_data.json:2:", "duplicate key 'question'")
    assert_nothing_written(tmp_path / "demos.jsonl", b"earlier demonstrations\n")


def test_cli_sea_demos_refuses_a_non_utf8_fold_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    root = _data_dir(tmp_path)
    fold = root / "truthfulqa" / "folds" / "TruthfulQA-1.csv"
    data = fold.read_bytes()
    fold.write_bytes(data[:-2] + b"\xff" + data[-2:])
    args = ["demos", "truthfulqa", "--fold", "1", "--data-dir", "data", "--out", "d.jsonl"]
    assert_refused(run_cli(args), "TruthfulQA-1.csv:", "not valid UTF-8", "byte 0xff")
    assert_nothing_written(tmp_path / "d.jsonl")


def test_cli_sea_eval_refuses_a_malformed_mc_task_before_loading_a_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    root = _data_dir(tmp_path)
    mc = root / "truthfulqa" / "mc_task.json"
    mc.write_text(mc.read_text(encoding="utf-8").rstrip().removesuffix("]") + ", {]\n")
    args = [
        "eval", "truthfulqa", "--model", "no-such-model-is-loaded", "--mc-file", "mc_task.json",
        "--data-dir", "data", "--out", "out",
    ]  # fmt: skip
    assert_refused(run_cli(args), "data/truthfulqa/mc_task.json:", "invalid JSON")
    assert not (tmp_path / "out").exists()


def test_cli_sea_demos_refuses_a_bad_bbq_value_quoting_it_literally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    age = _data_dir(tmp_path) / "bbq" / "official" / "Age.jsonl"
    lines = age.read_text(encoding="utf-8").split("\n")
    lines[1] = lines[1].replace('"question_polarity": "nonneg"', '"question_polarity": "[/b]"')
    lines[1] = lines[1].replace('"question_polarity": "neg"', '"question_polarity": "[/b]"')
    age.write_text("\n".join(lines), encoding="utf-8")
    args = ["demos", "bbq", "--n", "2", "--data-dir", "data", "--out", "d.jsonl"]
    assert_refused(run_cli(args), "Age.jsonl:2:", "question_polarity", "got '[/b]'")
    assert_nothing_written(tmp_path / "d.jsonl")
