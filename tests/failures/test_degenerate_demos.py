"""Failure catalogue, degenerate demonstrations: N = 1–3, all duplicates, positive ==
negative. Each used to save an identity editor with exit 0 and no word, or died on a zero
cross-covariance naming no layer. Now (documented in :meth:`SpectralFitter.fit`):

- a zero cross-covariance (1 demonstration centred; duplicates centred) is a
  :class:`FitError` naming the layers, the cause and ``--no-centered``;
- positive == negative everywhere is a :class:`FitError` (no contrast);
- an edit that is the identity at every layer (kept subspaces coincide: N = 1 or 2, or
  duplicates, uncentred) is a :class:`FitError`; at some layers only, a warning;
- kept ranks that reach every direction N demonstrations span are warned about.

Whatever the outcome, an editor returned has finite factors and edits some layer.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from spectral_edit.core.spectral import subspaces_coincide
from spectral_edit.core.statistics import FitError
from spectral_edit.editors.sea_fit import fit_from_arrays
from tests.failures.refusals import assert_nothing_written, assert_refused, run_cli

D = 16
FLOAT32 = 1e-5
"""Tolerance of :func:`subspaces_coincide` on an editor's stored (float32) factors."""
TODO = "more, and more varied, demonstrations"


def _arrays(n: int, layers: int = 2, d: int = D, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, layers, d, generator=gen) for _ in range(3)]


def _editor_or_error(*arrays, **options):
    """The fit's editor (asserted finite, and not the identity at every layer) or its
    :class:`FitError`; anything else fails the test."""
    try:
        editor = fit_from_arrays(*arrays, **options)
    except FitError as error:
        return error
    for pos, neg in zip(editor.pos_factors, editor.neg_factors, strict=True):
        assert bool(torch.isfinite(pos).all() and torch.isfinite(neg).all())
    assert not all(
        subspaces_coincide(p, n, FLOAT32)
        for p, n in zip(editor.pos_factors, editor.neg_factors, strict=True)
    )
    return editor


# ------------------------------------------------------------------------ API, per case
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("svd", ["thin", "dense"])
def test_few_demonstrations_never_give_nan_or_a_silent_identity(n, centered, svd):
    outcome = _editor_or_error(*_arrays(n), centered=centered, svd=svd, layers=[4, 9])
    assert isinstance(outcome, FitError), "random data with N <= 3 keeps every direction"
    message = str(outcome)
    assert "layer" in message and "4" in message and "9" in message
    assert ("--no-centered" in message) or (TODO in message)


def test_one_demonstration_centred_names_the_cause_and_the_fix():
    with pytest.raises(FitError) as caught:
        fit_from_arrays(*_arrays(1), centered=True, layers=[4, 9])
    message = str(caught.value)
    assert "zero at layer 4 (Ω+), 4 (Ω-), 9 (Ω+), 9 (Ω-)" in message
    assert "centred fit of 1 demonstration" in message and "--no-centered" in message


@pytest.mark.parametrize("n", [1, 2])
def test_one_or_two_demonstrations_uncentred_would_do_nothing(n):
    with pytest.raises(FitError) as caught:
        fit_from_arrays(*_arrays(n), layers=[4, 9])
    message = str(caught.value)
    assert "the edit would do nothing at every fitted layer" in message
    assert f"4: k+ = k- = {n}" in message and f"9: k+ = k- = {n}" in message
    assert TODO in message and "--pos-ratio" in message


def test_two_demonstrations_with_smaller_ranks_give_a_warned_editor():
    """Documented result: N = 2 with fixed ranks that differ is an edit (not the identity)
    but from directions the two demonstrations span: warned."""
    with pytest.warns(UserWarning, match="every direction 2 demonstrations span"):
        editor = _editor_or_error(*_arrays(2), pos_rank=1, neg_rank=2)
    assert not isinstance(editor, FitError) and editor.ranks[0] == (1, 2)


@pytest.mark.parametrize("centered", [False, True])
def test_all_duplicate_demonstrations_are_refused(centered):
    h, hp, hn = (x[:1].repeat(10, 1, 1) for x in _arrays(1))
    with pytest.raises(FitError) as caught:
        fit_from_arrays(h, hp, hn, centered=centered, layers=[2, 3])
    message = str(caught.value)
    assert "layer 2" in message or "2: k+" in message
    assert "identical" in message and "duplicate" in message


def test_positive_equal_to_negative_is_refused_as_no_contrast():
    h, hp, _ = _arrays(40)
    for centered in (False, True):
        with pytest.raises(FitError, match=r"positive and negative activations are identical"):
            fit_from_arrays(h, hp, hp.clone(), centered=centered, layers=[1, 2])


def test_an_identity_edit_at_some_layers_only_is_a_warning():
    h, hp, hn = _arrays(40, layers=2)
    hn[:, 1] = hp[:, 1]  # no contrast at the second layer only
    with pytest.warns(UserWarning, match=r"the edit does nothing at layer\(s\) 6"):
        editor = fit_from_arrays(h, hp, hn, layers=[5, 6], pos_ratio=0.9, neg_ratio=0.9)
    assert not subspaces_coincide(*editor.factors(5), FLOAT32)
    assert subspaces_coincide(*editor.factors(6), FLOAT32)


def test_enough_varied_demonstrations_fit_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        editor = _editor_or_error(*_arrays(100), pos_ratio=0.8, neg_ratio=0.8, centered=True)
    assert not isinstance(editor, FitError)


# ------------------------------------------------------------------------------- the CLI
DEMO = {"prompt": "Q: Is the sky blue? A:", "positive": "yes, it is", "negative": "no"}
OTHER = {"prompt": "Q: Do fish swim? A:", "positive": "they do", "negative": "fish fly"}


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("records", "extra", "fragments"),
    [
        ([DEMO], [], ["do nothing at every fitted layer", "layer", TODO]),
        ([DEMO], ["--centered"], ["centred fit of 1 demonstration", "--no-centered"]),
        ([DEMO, OTHER], [], ["do nothing at every fitted layer", TODO]),
        ([DEMO, OTHER], ["--centered"], ["do nothing at every fitted layer", TODO]),
        ([DEMO] * 4, [], ["identical", "duplicate"]),
        ([DEMO] * 4, ["--centered"], ["identical", "duplicate", "--no-centered"]),
        (
            [DEMO | {"negative": DEMO["positive"]}, OTHER | {"negative": OTHER["positive"]}] * 2,
            [],
            ["positive and negative activations are identical", "no contrast"],
        ),
    ],
    ids=["n1", "n1-centred", "n2", "n2-centred", "duplicates", "duplicates-centred", "pos=neg"],
)
def test_cli_refuses_degenerate_demonstrations(tiny_model_dir, tmp_path, records, extra, fragments):
    demos = _write(tmp_path / "demos.jsonl", records)
    out = tmp_path / "editor.safetensors"
    out.write_bytes(b"an earlier editor")
    args = ["fit", "--model", tiny_model_dir, "--demos", demos, "--out", out]
    result = run_cli([*args, "--neutral", "prompt", "--layers", "1,2", *extra])
    output = assert_refused(result, *fragments)
    assert "1" in output and "2" in output  # the layers
    assert_nothing_written(out, before=b"an earlier editor")
