"""Content-keyed stages ("Already found"): a rerun of ``sea demo`` must not report old
scores after the model folder's weights were replaced or another ``--data-dir`` was given.

Chosen key (:func:`~spectral_edit.experiments.store.model_key`): the model's shareable
name, a fingerprint of its loaded weights (names, shapes, dtypes and up to 4096 evenly
spaced elements of every tensor: cheap at any size, blind to where the weights lie), and
the library version; the data by content (:func:`~spectral_edit.experiments.store.content_key`
of the demonstrations and questions actually read).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from spectral_edit.core.options import SeaOptions
from spectral_edit.experiments.demo_job import truthfulness_demo
from spectral_edit.experiments.store import content_key, model_key, weights_fingerprint
from spectral_edit.hf.models import load_model
from tests.tiny_models import make_tiny_model, make_tiny_tokenizer

FIXTURES = Path(__file__).parents[1] / "fixtures" / "data"
FIT = SeaOptions(layers="last-2", centered=True, pos_ratio=0.9, neg_ratio=0.9)


def _save_model(folder: Path, seed: int) -> Path:
    make_tiny_model("gemma3", seed=seed).save_pretrained(folder)
    make_tiny_tokenizer().save_pretrained(folder)
    return folder


def _data(folder: Path) -> Path:
    (folder / "halueval").mkdir(parents=True)
    shutil.copy(
        FIXTURES / "halueval" / "qa_data.json", folder / "halueval" / "qa_one-turn_data.json"
    )
    shutil.copytree(FIXTURES / "truthfulqa", folder / "truthfulqa")
    return folder


def _demo(model: Path, data: Path, out: Path, log: list[str]):
    return truthfulness_demo(
        str(model), FIT, out_dir=out, data_dir=data, n_demos=3, limit=2,
        mc_file="mc_task.json", batch_size=4, echo=log.append,
    )  # fmt: skip


def _reused(log: list[str]) -> set[str]:
    return {m.split(":")[0].lstrip("· ") for m in log if "done earlier" in m}


def _record(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}.json").read_text())


def test_weights_fingerprint_follows_the_weights_not_the_place(tmp_path: Path) -> None:
    a, _ = load_model(str(_save_model(tmp_path / "a", seed=0)))
    b, _ = load_model(str(_save_model(tmp_path / "elsewhere" / "b", seed=0)))
    c, _ = load_model(str(_save_model(tmp_path / "c", seed=1)))
    assert weights_fingerprint(a) == weights_fingerprint(b) != weights_fingerprint(c)
    key = model_key(a, str(tmp_path / "a"))
    assert key["name"] == "a" and str(tmp_path) not in json.dumps(key)
    assert content_key(["x", "y"]) != content_key(["y", "x"])


def test_replaced_weights_recompute_every_stage(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SEA_OFFLINE", "1")
    model, data, out = (
        _save_model(tmp_path / "model", seed=0),
        _data(tmp_path / "d"),
        tmp_path / "o",
    )
    first = _demo(model, data, out, log := []).to_json()
    assert _reused(log) == set()
    again = _demo(model, data, out, log := []).to_json()
    assert _reused(log) == {"fit", "eval_unedited", "eval_edited"}  # same content: reused
    assert again["unedited"] == first["unedited"]
    _save_model(model, seed=1)  # same folder, same name, other weights
    changed = _demo(model, data, out, log := []).to_json()
    assert _reused(log) == set()  # every stage recomputed
    assert changed["unedited"] != first["unedited"]
    fresh = _demo(model, data, tmp_path / "fresh", []).to_json()
    for side in ("unedited", "edited"):  # the same figures as a fresh run (timing aside)
        assert {**changed[side], "seconds": 0} == {**fresh[side], "seconds": 0}


def test_another_data_dir_recomputes_what_reads_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SEA_OFFLINE", "1")
    model, out = _save_model(tmp_path / "model", seed=0), tmp_path / "o"
    data = _data(tmp_path / "d1")
    _demo(model, data, out, [])
    before = _record(out, "eval_unedited")
    other = _data(tmp_path / "d2")
    questions_file = other / "truthfulqa" / "mc_task.json"
    questions = json.loads(questions_file.read_text())
    questions[0]["question"] = "A different first question?"
    questions_file.write_text(json.dumps(questions))
    _demo(model, other, out, log := [])
    assert _reused(log) == {"fit"}  # same demonstrations (HaluEval is the same)
    after = _record(out, "eval_unedited")
    assert after["key"] != before["key"]
    assert _demo(model, data, tmp_path / "o2", [])  # and the same data elsewhere...
    assert _record(tmp_path / "o2", "eval_unedited")["key"] == before["key"]  # ...same key


@pytest.mark.parametrize("name", ["fit", "eval_unedited", "eval_edited"])
def test_stage_records_hold_no_local_path(tmp_path: Path, monkeypatch, name: str) -> None:
    monkeypatch.setenv("SEA_OFFLINE", "1")
    model, data, out = _save_model(tmp_path / "model", 0), _data(tmp_path / "d"), tmp_path / "o"
    _demo(model, data, out, [])
    record = _record(out, name)
    assert str(tmp_path) not in json.dumps(record)
    assert record["options"]["model"]["name"] == "model"
