"""Failure catalogue, item 1: demonstrations files (`read_demos`, `sea fit --demos F`).

Every bad file is refused with a :class:`DemoFormatError` (a ``DataFormatError``) whose
message names the file and, for a bad line, the line; through the CLI the same message is
exit 2 before the model is loaded, and no editor is written (an earlier one is kept). The
reader accepts what the benchmark readers accept (a UTF-8 BOM, CRLF line ends, blank
lines) and warns, with their count, about lines that repeat an earlier demonstration.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from spectral_edit.data import DataFormatError
from spectral_edit.demos.format import (
    DemoFormatError,
    Demonstration,
    DuplicateDemonstrationsWarning,
    read_demos,
)
from tests.failures.refusals import assert_nothing_written, assert_ok, assert_refused, run_cli

GOOD = [
    {"prompt": f"Q: question {i}?\nA:", "positive": f"right {i}.", "negative": f"wrong {i}."}
    for i in range(6)
]
"""Six distinct valid records: enough for a fit of the tiny model."""

EARLIER = b"an earlier editor file"
"""What the ``--out`` file holds before a refused `sea fit`: it must stay as it was."""


def _line(record: object) -> str:
    return json.dumps(record, ensure_ascii=False)


def _file(folder: Path, name: str, lines: list[str], *, end: str = "\n") -> Path:
    """A demonstrations file of ``lines`` (each ended with ``end``)."""
    path = folder / name
    path.write_text("".join(line + end for line in lines), encoding="utf-8", newline="")
    return path


BAD_LINES = {
    "malformed JSON": ('{"prompt": "p", "positive": ', "invalid JSON"),
    "not an object": ('["p", "x", "y"]', "expected a JSON object, got list"),
    "missing prompt": (_line({"positive": "x", "negative": "y"}), "missing field 'prompt'"),
    "missing positive": (_line({"prompt": "p", "negative": "y"}), "missing field 'positive'"),
    "missing negative": (_line({"prompt": "p", "positive": "x"}), "missing field 'negative'"),
    "number for a string": (
        _line({"prompt": "p", "positive": 3, "negative": "y"}),
        "'positive' must be a string, got int",
    ),
    "list for a string": (
        _line({"prompt": ["p"], "positive": "x", "negative": "y"}),
        "'prompt' must be a string, got list",
    ),
    "empty answer": (
        _line({"prompt": "p", "positive": "x", "negative": ""}),
        "'negative' is empty",
    ),
    "blank answer": (
        _line({"prompt": "p", "positive": " \t", "negative": "y"}),
        "'positive' is empty",
    ),
    "neutral not a string": (
        _line({"prompt": "p", "positive": "x", "negative": "y", "neutral": 1}),
        "'neutral' must be a string",
    ),
    "unknown field": (
        _line({"prompt": "p", "positive": "x", "negative": "y", "answer": "z"}),
        "unknown fields ['answer']",
    ),
    "markup-like field name": (
        _line({"prompt": "p", "positive": "x", "negative": "y", "[/b]": "z"}),
        "unknown fields ['[/b]']",
    ),
    "duplicate key": (
        '{"prompt": "p", "positive": "x", "positive": "z", "negative": "y"}',
        "duplicate key 'positive'",
    ),
    "lone surrogate": (
        '{"prompt": "p\\ud800", "positive": "x", "negative": "y"}',
        "lone UTF-16 surrogate",
    ),
}
"""Case → (the bad line, a fragment of the reason)."""


def _bad_file(folder: Path, case: str) -> Path:
    """Line 1 good, line 2 blank, line 3 bad, line 4 good: the error is at line 3."""
    bad, _ = BAD_LINES[case]
    return _file(folder, "bad.jsonl", [_line(GOOD[0]), "  ", bad, _line(GOOD[1])])


# --------------------------------------------------------------------------- Python API


@pytest.mark.parametrize("case", BAD_LINES)
def test_bad_line_is_refused_naming_file_and_line(tmp_path: Path, case: str) -> None:
    path = _bad_file(tmp_path, case)
    with pytest.raises(DemoFormatError) as info:
        read_demos(path)
    error = info.value
    assert isinstance(error, DataFormatError) and isinstance(error, ValueError)
    assert (error.path, error.line) == (path, 3)
    assert str(error).startswith(f"{path}:3: ")
    assert BAD_LINES[case][1] in error.reason


@pytest.mark.parametrize("content", ["", "\n", "  \n\t\n\r\n", "\ufeff", "\ufeff\n \n"])
def test_empty_or_blank_file_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(content, encoding="utf-8", newline="")
    with pytest.raises(DemoFormatError, match="no demonstrations in the file") as info:
        read_demos(path)
    assert info.value.path == path and info.value.line is None


def test_missing_file_and_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DemoFormatError, match="no such demonstrations file.*sea demos") as info:
        read_demos(tmp_path / "nope.jsonl")
    assert str(info.value).startswith(f"{tmp_path / 'nope.jsonl'}: ")
    with pytest.raises(DemoFormatError, match="is a directory, not a demonstrations file"):
        read_demos(tmp_path)


def test_non_utf8_bytes_name_the_line_and_byte_offset(tmp_path: Path) -> None:
    head = (_line(GOOD[0]) + "\n" + _line(GOOD[1]) + "\n").encode()
    path = tmp_path / "latin1.jsonl"
    bad = _line({**GOOD[2], "positive": "caf\u00e9"}).encode("latin-1")
    path.write_bytes(head + bad + b"\n")
    offset = len(head) + bad.index(b"\xe9")
    with pytest.raises(DemoFormatError) as info:
        read_demos(path)
    assert info.value.line == 3
    assert f"byte 0xe9 at byte offset {offset}" in str(info.value)
    assert "UTF-8" in str(info.value)


def test_bom_crlf_and_blank_lines_read_as_the_plain_file(tmp_path: Path) -> None:
    lines = [_line(r) for r in GOOD]
    plain = read_demos(_file(tmp_path, "plain.jsonl", lines))
    assert plain == [Demonstration(**r) for r in GOOD]
    crlf = _file(tmp_path, "crlf.jsonl", lines, end="\r\n")
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + crlf.read_bytes().replace(b"\r\n", b"\r\n \r\n", 1))
    assert read_demos(crlf) == plain
    assert read_demos(bom) == plain


def test_a_bom_is_accepted_only_at_the_start(tmp_path: Path) -> None:
    path = _file(tmp_path, "bom2.jsonl", [_line(GOOD[0]), "\ufeff" + _line(GOOD[1])])
    with pytest.raises(DemoFormatError, match="invalid JSON") as info:
        read_demos(path)
    assert info.value.line == 2


def test_duplicates_are_kept_and_warned_with_their_count(tmp_path: Path) -> None:
    lines = [_line(r) for r in GOOD] + [_line(GOOD[0]), _line(GOOD[3]), _line(GOOD[0])]
    path = _file(tmp_path, "dups.jsonl", lines)
    with pytest.warns(DuplicateDemonstrationsWarning) as caught:
        demos = read_demos(path)
    assert len(demos) == len(lines)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert str(path) in message and "3 of 9 demonstrations" in message
    assert "lines 7, 8, 9" in message


def test_no_warning_without_duplicates(tmp_path: Path) -> None:
    path = _file(tmp_path, "ok.jsonl", [_line(r) for r in GOOD])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_demos(path)


# --------------------------------------------------------------------------- CLI


def _fit(tiny_model_dir: Path, demos: str, out: str = "editor.safetensors") -> list[str]:
    return [
        "fit", "--model", str(tiny_model_dir), "--demos", demos, "--out", out,
        "--layers", "all", "--neutral", "prompt", "--batch-size", "4",
    ]  # fmt: skip


@pytest.mark.parametrize("case", BAD_LINES)
def test_cli_bad_line_is_refused_and_keeps_the_earlier_editor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, case: str
) -> None:
    monkeypatch.chdir(tmp_path)
    _bad_file(tmp_path, case)
    out = tmp_path / "editor.safetensors"
    out.write_bytes(EARLIER)
    result = run_cli(_fit(tiny_model_dir, "bad.jsonl"))
    assert_refused(result, "bad.jsonl:3:", BAD_LINES[case][1])
    assert_nothing_written(out, EARLIER)


def _non_utf8(folder: Path) -> str:
    (folder / "l1.jsonl").write_bytes(b'{"prompt": "\xff"}\n')
    return "l1.jsonl"


UNUSABLE = {
    "missing": (lambda folder: "nope.jsonl", "nope.jsonl: no such demonstrations file"),
    "directory": (lambda folder: "sub", "sub: is a directory"),
    "empty": (lambda folder: _file(folder, "e.jsonl", [" "]).name, "e.jsonl: no demonstrations"),
    "non-utf8": (_non_utf8, "l1.jsonl:1: not valid UTF-8: byte 0xff at byte offset 12"),
}
"""Case → (make the file in a folder and return its name, a fragment of the message)."""


@pytest.mark.parametrize("case", UNUSABLE)
def test_cli_unusable_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, case: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    make, fragment = UNUSABLE[case]
    result = run_cli(_fit(tiny_model_dir, make(tmp_path)))
    assert_refused(result, fragment)
    assert_nothing_written(tmp_path / "editor.safetensors")


def test_cli_fits_a_bom_crlf_file_and_warns_about_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    lines = ["\ufeff" + _line(GOOD[0]), *map(_line, GOOD[1:]), "", _line(GOOD[2])]
    _file(tmp_path, "demos.jsonl", lines, end="\r\n")
    output = assert_ok(run_cli(_fit(tiny_model_dir, "demos.jsonl")))
    flat = " ".join(output.split())
    # the library's warning, shown by the CLI as one line (not Python's warning format)
    assert "warning: demos.jsonl: 1 of 7 demonstrations repeat an earlier one" in flat
    assert DuplicateDemonstrationsWarning.__name__ not in output
    assert "7 demonstrations" in output
    assert (tmp_path / "editor.safetensors").stat().st_size > 0
