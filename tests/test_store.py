"""The one resumable store (experiments/store.py): records, tensors, artifacts, rows."""

import json
import multiprocessing

import pytest
import torch

from spectral_edit.experiments.store import Store, options_key


def test_options_key_is_stable_and_order_free():
    assert options_key({"a": 1, "b": [1, 2]}) == options_key({"b": [1, 2], "a": 1})
    assert options_key({"a": 1}) != options_key({"a": 2})


def test_records_reuse_recompute_and_say_so(tmp_path):
    said = []
    store = Store(tmp_path / "new", echo=said.append)
    assert store.get("s", {"a": 1}) == (False, None)
    assert store.run("s", {"a": 1}, lambda: None) is None  # a None result is a result
    assert store.get("s", {"a": 1}) == (True, None)
    assert store.run("s", {"a": 1}, lambda: 1 / 0) is None
    assert said == [f"· s: done earlier, reusing {tmp_path / 'new' / 's.json'}"]
    record = json.loads((tmp_path / "new" / "s.json").read_text())
    assert record == {"key": options_key({"a": 1}), "options": {"a": 1}, "result": None}
    # a record written by an older format (no "result") counts as missing
    (tmp_path / "new" / "s.json").write_text(json.dumps({"key": options_key({"a": 1})}))
    assert store.get("s", {"a": 1}) == (False, None)
    store.forget("s")
    assert not (tmp_path / "new" / "s.json").exists()


def test_tensors_are_keyed_and_keep_their_metadata(tmp_path):
    store = Store(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(6.0).reshape(2, 3).t()}  # not contiguous

    first = store.tensors("acts", {"n": 1}, compute, shared=True)
    again = store.tensors("acts", {"n": 1}, compute)
    assert calls == [1] and torch.equal(first["x"], again["x"])
    assert store.get_tensors("acts", {"n": 2}) is None
    store.put_tensors("acts", {"n": 2}, {"x": torch.ones(1)}, {"seconds": "1.5"})
    tensors, metadata = store.get_tensors("acts", {"n": 2})
    assert metadata == {"seconds": "1.5"} and torch.equal(tensors["x"], torch.ones(1))


def test_artifact_needs_both_its_record_and_its_file(tmp_path):
    store = Store(tmp_path)

    def make():
        return (lambda path: path.write_text("payload")), {"seconds": 2.0}

    loaded, result = store.artifact("fit", {"k": 1}, "thing.txt", lambda p: p.read_text(), make)
    assert (loaded, result) == ("payload", {"seconds": 2.0})
    assert store.get_artifact("fit", {"k": 1}, "thing.txt", lambda p: p.read_text()) == (
        "payload",
        {"seconds": 2.0},
    )
    (tmp_path / "thing.txt").unlink()  # a record without its file: made again
    assert store.get_artifact("fit", {"k": 1}, "thing.txt", lambda p: p.read_text()) is None
    with pytest.raises(ZeroDivisionError):
        store.artifact("fit", {"k": 1}, "thing.txt", lambda p: p.read_text(), lambda: 1 / 0)


def _append_rows(folder, worker):
    store = Store(folder)
    for i in range(25):
        store.append("grid", {"worker": worker, "i": i, "pad": "x" * 500})


def test_rows_from_several_processes(tmp_path):
    store = Store(tmp_path)
    assert store.rows("grid") == []
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_rows, args=(tmp_path, w)) for w in range(2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join()
    rows = store.rows("grid", locked=True)
    assert len(rows) == 50 and {(r["worker"], r["i"]) for r in rows} == {
        (w, i) for w in range(2) for i in range(25)
    }
