"""Catalogue item 8, editor files: the reader takes any bytes calmly.

Random bytes, and random mutations of valid small editor files (byte flips, truncations,
header JSON values replaced, with or without a recomputed content hash), loaded with and
without a model: the reader either raises :class:`EditorFileError` or returns an editor
whose tensors and header numbers are all finite; it never raises anything else and never
hangs (each example has a deadline).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from spectral_edit import EditorFileError, fit_from_arrays, load_editor
from spectral_edit.editors.baselines import MeanDifferenceEditor
from spectral_edit.editors.file_format import METADATA_KEY, content_hash, model_identity
from tests.tiny_models import make_tiny_model

FUZZ = settings(
    max_examples=60,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
"""Moderate and reproducible: the whole file runs in seconds."""

MODEL = make_tiny_model("llama")  # hidden size 32, 2 layers


def _valid_files(folder: Path) -> list[Path]:
    """A SEA editor (with the model's identity) and a baseline editor, both for MODEL."""
    gen = torch.Generator().manual_seed(0)
    neutral, positive, negative = (torch.randn(10, 2, 32, generator=gen) for _ in range(3))
    common = {"layers": [0, 1], "num_layers": 2}
    sea = fit_from_arrays(
        neutral, positive, negative, pos_rank=2, neg_rank=3, metadata=model_identity(MODEL),
        **common,
    )  # fmt: skip
    baseline = MeanDifferenceEditor.fit(positive, negative, **common)
    return [sea.save(folder / "sea.safetensors"), baseline.save(folder / "md.safetensors")]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def valid(workdir: Path) -> list[tuple[bytes, dict[str, Any], dict[str, torch.Tensor]]]:
    """Each valid file as ``(bytes, editor header, tensors)``."""
    out = []
    for path in _valid_files(workdir):
        with safe_open(str(path), framework="pt") as handle:
            header = json.loads(handle.metadata()[METADATA_KEY])
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        out.append((path.read_bytes(), header, tensors))
    return out


def _tensors_of(editor: Any) -> Iterator[torch.Tensor]:
    return iter(type(editor).FORMAT.encode(editor)[0].values())


def _numbers(value: Any) -> Iterator[float]:
    if isinstance(value, float):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _numbers(item)


def _check_reader(path: Path) -> None:
    """The property: EditorFileError, or an editor with finite tensors and options."""
    for model in (None, MODEL):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # identity warnings are allowed
                editor = load_editor(path, model)
        except EditorFileError as error:
            assert str(path) in str(error)
            continue
        for tensor in _tensors_of(editor):
            assert torch.isfinite(tensor).all()
        fields = [getattr(editor, f) for f in ("alpha", "feature_scales") if hasattr(editor, f)]
        assert all(math.isfinite(x) for x in _numbers(fields))


@FUZZ
@given(data=st.binary(max_size=2048))
def test_random_bytes_are_refused_cleanly(data, workdir):
    path = workdir / "random.safetensors"
    path.write_bytes(data)
    _check_reader(path)


@FUZZ
@given(
    which=st.integers(0, 1),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), max_size=4),
    keep=st.none() | st.floats(0, 1),
)
def test_flipped_and_truncated_files_are_refused_cleanly(which, flips, keep, valid, workdir):
    raw = bytearray(valid[which][0])
    for where, mask in flips:
        raw[int(where * len(raw))] ^= mask
    if keep is not None:
        raw = raw[: int(keep * len(raw))]
    path = workdir / "mutated.safetensors"
    path.write_bytes(bytes(raw))
    _check_reader(path)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=8,
)
"""Any JSON value (NaN and Infinity included: Python's json writes and reads them)."""


@FUZZ
@given(
    which=st.integers(0, 1),
    edits=st.lists(st.tuples(st.integers(0, 30), JSON_VALUES), min_size=1, max_size=3),
    dropped=st.lists(st.integers(0, 30), max_size=2),
    rehash=st.booleans(),
)
def test_edited_headers_are_refused_cleanly(which, edits, dropped, rehash, valid, workdir):
    _, header, tensors = valid[which]
    header = dict(header)
    keys = sorted(header)
    for index, value in edits:
        header[keys[index % len(keys)]] = value
    for index in dropped:
        header.pop(keys[index % len(keys)], None)
    if rehash:
        header["content_sha256"] = content_hash(tensors, header)
    path = workdir / "edited.safetensors"
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(header)})
    _check_reader(path)


@FUZZ
@given(
    which=st.integers(0, 1),
    name_index=st.integers(0, 10),
    position=st.floats(0, 1, exclude_max=True),
    value=st.sampled_from([math.nan, math.inf, -math.inf, 1e30, 0.0]),
)
def test_crafted_tensors_with_a_valid_hash_load_only_when_finite(
    which, name_index, position, value, valid, workdir
):
    _, header, tensors = valid[which]
    tensors = {name: tensor.clone() for name, tensor in tensors.items()}
    name = sorted(tensors)[name_index % len(tensors)]
    flat = tensors[name].view(-1)
    flat[int(position * flat.numel())] = value
    header = {**header, "content_sha256": content_hash(tensors, header)}
    path = workdir / "crafted.safetensors"
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(header)})
    if math.isfinite(value):
        _check_reader(path)
    else:
        with pytest.raises(EditorFileError, match=f"{name!r}.*non-finite"):
            load_editor(path)
