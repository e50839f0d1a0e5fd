"""Composed editors: order, identity members, hook removal, strength, files, the CLI."""

import json

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from spectral_edit import fit_from_arrays
from spectral_edit.cli.app import app
from spectral_edit.editors.baselines import MeanDifferenceEditor
from spectral_edit.editors.baselines.iti import ITIEditor
from spectral_edit.editors.composition import ComposedEditor, compose, members_of
from spectral_edit.editors.file_format import METADATA_KEY, EditorFileError
from spectral_edit.editors.registry import load_editor, load_editors
from spectral_edit.hf.hooks import hooked
from spectral_edit.hf.layers import find_decoder_layers
from spectral_edit.integrations.lm_eval import (
    UnsupportedEditorError,
    _resolve_editor,
    check_editor_positions,
    cli_arguments,
)

from .tiny_models import make_tiny_model

IDS = torch.tensor([[3, 8, 21, 40, 7, 11], [5, 9, 13, 2, 30, 4]])


@pytest.fixture(scope="module")
def llama():
    return make_tiny_model("llama")  # hidden size 32, 2 layers, 4 heads of 8


def _activations(d=32, layers=2, n=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    neutral = torch.randn(n, layers, d, generator=gen)
    shift = torch.randn(layers, d, generator=gen) * 2
    return neutral, neutral + shift + torch.randn(n, layers, d, generator=gen), neutral - shift


def _sea(seed=0, **options):
    neutral, positive, negative = _activations(seed=seed)
    editor = fit_from_arrays(
        neutral, positive, negative, layers=[0, 1], num_layers=2, pos_rank=3, neg_rank=2
    )
    return editor.with_options(**options) if options else editor


def _mean_diff(alpha=3.0, seed=1, layers=(1,)):
    _, positive, negative = _activations(seed=seed)
    chosen = list(layers)
    return MeanDifferenceEditor.fit(
        positive[:, chosen], negative[:, chosen], layers=chosen, num_layers=2, alpha=alpha
    )


def _iti(alpha=4.0):
    gen = torch.Generator().manual_seed(5)
    directions = torch.nn.functional.normalize(torch.randn(2, 8, generator=gen), dim=1)
    return ITIEditor(
        heads=((1, 0), (0, 3)),
        directions=directions,
        sigmas=torch.tensor([1.5, 0.7]),
        num_heads=4,
        head_dim=8,
        hidden_size=32,
        num_layers=2,
        alpha=alpha,
    )


def _logits(model, editor=None):
    with torch.no_grad():
        if editor is None:
            return model(IDS).logits
        with editor.apply(model):
            return model(IDS).logits


def _hooks_left(model):
    return [
        name
        for name, module in model.named_modules()
        if module._forward_hooks or module._forward_pre_hooks
    ]


def _by_hand(model, *edits):
    """Logits with ``edits`` (functions of ``(layer, hidden)``) applied in order at every
    layer's output, in one hand-written hook."""

    def edit(layer, hidden):
        for fn in edits:
            hidden = fn(layer, hidden)
        return hidden

    layers = dict(enumerate(find_decoder_layers(model)))
    with torch.no_grad(), hooked(layers, edit):
        return model(IDS).logits


def _sea_edit(editor):
    return lambda layer, h: editor.edit(h, layer) if layer in editor.active_layers else h


def _md_edit(editor):
    return lambda layer, h: editor.edit(h, layer) if layer in editor.layers else h


# ---------------------------------------------------------------------------- order
def test_members_act_in_the_order_given_at_a_shared_layer(llama):
    sea, md = _sea(), _mean_diff()
    sea_then_md = _logits(llama, ComposedEditor((sea, md)))
    md_then_sea = _logits(llama, ComposedEditor((md, sea)))
    # the two do not commute (SEA's norm merge rescales what the vector added) ...
    assert (sea_then_md - md_then_sea).abs().max() > 1e-2
    # ... and each order is exactly the hand-written composition in that order
    torch.testing.assert_close(sea_then_md, _by_hand(llama, _sea_edit(sea), _md_edit(md)))
    torch.testing.assert_close(md_then_sea, _by_hand(llama, _md_edit(md), _sea_edit(sea)))
    assert not _hooks_left(llama)


def test_two_sea_editors_compose_in_order(llama):
    first, second = _sea(seed=0), _sea(seed=3, alpha=0.7)
    ab = _logits(llama, ComposedEditor((first, second)))
    ba = _logits(llama, ComposedEditor((second, first)))
    assert (ab - ba).abs().max() > 1e-3
    torch.testing.assert_close(ab, _by_hand(llama, _sea_edit(first), _sea_edit(second)))
    torch.testing.assert_close(ba, _by_hand(llama, _sea_edit(second), _sea_edit(first)))


def test_editors_of_different_kinds_compose(llama):
    sea, md, iti = _sea(), _mean_diff(), _iti()
    composed = ComposedEditor((iti, sea, md))
    logits = _logits(llama, composed)
    for alone in (iti, sea, md):
        assert (logits - _logits(llama, alone)).abs().max() > 1e-3
    # ITI's pre-hook on layer 1's output projection acts inside the layer, before any
    # edit of that layer's output: listing it last changes nothing
    torch.testing.assert_close(_logits(llama, ComposedEditor((sea, md, iti))), logits)


# ------------------------------------------------------------------------- identity
def test_an_identity_member_changes_nothing(llama):
    sea, md = _sea(), _mean_diff()
    expected = _logits(llama, ComposedEditor((sea, md)))
    for identity in (_mean_diff(alpha=0.0, seed=7), _sea(seed=4, alpha=0.0), _iti(alpha=0.0)):
        for members in ((identity, sea, md), (sea, identity, md), (sea, md, identity)):
            got = _logits(llama, ComposedEditor(members))
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert torch.equal(_logits(llama, ComposedEditor((_sea(alpha=0.0),))), _logits(llama))


def test_alpha_scales_every_member(llama):
    sea, md = _sea(alpha=0.5), _mean_diff(alpha=3.0)
    composed = ComposedEditor((sea, md))
    doubled = composed.with_options(alpha=2.0)
    assert [m.alpha for m in doubled.members] == [1.0, 6.0]
    assert [m.alpha for m in doubled.editors] == [0.5, 3.0]  # as fitted, kept
    by_hand = ComposedEditor((sea.with_options(alpha=1.0), md.with_options(alpha=6.0)))
    torch.testing.assert_close(_logits(llama, doubled), _logits(llama, by_hand), rtol=0, atol=0)
    assert torch.equal(_logits(llama, composed.with_options(alpha=0.0)), _logits(llama))
    with pytest.raises(ValueError, match="alpha"):
        composed.with_options(alpha=float("nan"))


def test_compositions_nest_by_flattening(llama):
    sea, md, iti = _sea(), _mean_diff(), _iti()
    inner = ComposedEditor((sea, md), alpha=0.5)
    outer = ComposedEditor((inner, iti))
    assert [type(m) for m in outer.editors] == [type(sea), type(md), ITIEditor]
    assert [m.alpha for m in outer.editors] == [0.5 * sea.alpha, 0.5 * md.alpha, iti.alpha]
    assert compose([sea]) is sea and isinstance(compose([sea, md]), ComposedEditor)
    assert members_of(sea) == (sea,)


# ---------------------------------------------------------------------- hook removal
def test_hooks_of_all_members_are_removed_on_exit_and_after_an_error(llama):
    composed = ComposedEditor((_sea(center_edit=True, positions="answer"), _mean_diff(), _iti()))
    before = _logits(llama)
    with composed.apply(llama):
        assert len(_hooks_left(llama)) >= 3
    assert not _hooks_left(llama)
    with pytest.raises(RuntimeError, match="boom"), composed.apply(llama):
        llama(IDS)
        raise RuntimeError("boom")
    assert not _hooks_left(llama)
    handle = composed.attach(llama)
    handle.remove()
    handle.remove()  # idempotent
    assert not _hooks_left(llama)
    assert torch.equal(_logits(llama), before)


def test_a_member_failing_to_attach_removes_the_hooks_already_added(llama):
    broken = _mean_diff()
    broken = MeanDifferenceEditor(
        broken.layers, broken.vectors, 32, 2, alpha=1.0, layer_path="model.nowhere"
    )
    composed = ComposedEditor((_sea(), _iti(), broken))
    with pytest.raises(Exception, match="nowhere"):
        composed.attach(llama)
    assert not _hooks_left(llama)


# ------------------------------------------------------------------ shapes and files
def test_members_must_be_fitted_for_one_model_shape(tmp_path):
    _, positive, negative = _activations(d=16)
    other = MeanDifferenceEditor.fit(positive, negative, layers=[0, 1], num_layers=2)
    with pytest.raises(ValueError, match="member 1 .*hidden size 16"):
        ComposedEditor((_sea(), other))
    a = _sea().save(tmp_path / "a.safetensors")
    b = other.save(tmp_path / "narrow.safetensors")
    with pytest.raises(EditorFileError, match=r"narrow\.safetensors: .*hidden size 16.*a\.safe"):
        load_editors([a, b])
    with pytest.raises(ValueError, match="at least one"):
        ComposedEditor(())


def test_save_and_load_round_trip_through_the_registry(llama, tmp_path):
    composed = ComposedEditor(
        (_sea(center_edit=True), _iti(), _mean_diff()), alpha=0.8, metadata={"note": "x"}
    )
    path = composed.save(tmp_path / "c.safetensors")
    loaded = load_editor(path, llama)
    assert isinstance(loaded, ComposedEditor)
    assert [type(m) for m in loaded.editors] == [type(m) for m in composed.editors]
    assert loaded.alpha == 0.8 and dict(loaded.metadata) == {"note": "x"}
    torch.testing.assert_close(_logits(llama, loaded), _logits(llama, composed), rtol=0, atol=0)
    with safe_open(str(path), framework="pt") as handle:
        names = set(handle.keys())
        header = json.loads(handle.metadata()[METADATA_KEY])
    assert "member.0.layer.0.pos" in names and "member.1.directions" in names
    assert "member.2.layer.1.vector" in names
    assert [m["format"] for m in header["members"]] == [
        "spectral-edit/sea",
        "spectral-edit/iti",
        "spectral-edit/mean-diff",
    ]
    # a second save of the loaded composition is the same file
    again = loaded.save(tmp_path / "again.safetensors")
    assert again.read_bytes() == path.read_bytes()


def _rewrite(path, out, change_header=None, change_tensors=None):
    """The file at ``path`` rewritten with its header and tensors changed, the hash
    recomputed (what a careless tool would write)."""
    from spectral_edit.editors.file_format import write_editor_file

    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()[METADATA_KEY])
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    header.pop("content_sha256")
    if change_header:
        change_header(header)
    if change_tensors:
        change_tensors(tensors)
    return write_editor_file(out, tensors, header)


def test_damaged_composition_files_are_refused_naming_file_and_member(llama, tmp_path):
    path = ComposedEditor((_sea(), _mean_diff())).save(tmp_path / "c.safetensors")

    def unknown_kind(h):
        h["members"][1]["format"] = "spectral-edit/nope"

    def newer(h):
        h["members"][0]["format_version"] = 99

    def bad_field(h):
        h["members"][1]["alpha"] = "strong"

    def nested(h):
        h["members"][0]["format"] = "spectral-edit/composition"

    cases = [
        (unknown_kind, None, r"c2\.safetensors: member 1: unknown member format"),
        (newer, None, r"member 0: format version 99 is not supported"),
        (bad_field, None, r"member 1 \(spectral-edit/mean-diff\): header field 'alpha'"),
        (nested, None, r"member 0: unknown member format"),
        (None, lambda t: t.pop("member.1.layer.1.vector"), r"member 1 .*do not match"),
        (None, lambda t: t.update(stray=torch.zeros(2)), r"\['stray'\] belong to no member"),
    ]
    for change_header, change_tensors, message in cases:
        bad = _rewrite(path, tmp_path / "c2.safetensors", change_header, change_tensors)
        with pytest.raises(EditorFileError, match=message):
            load_editor(bad, llama)
    # an edited byte without a new hash: the one content hash of the whole file
    raw = bytearray(path.read_bytes())
    raw[-8] ^= 0xFF
    tampered = tmp_path / "tampered.safetensors"
    tampered.write_bytes(bytes(raw))
    with pytest.raises(EditorFileError, match="content hash mismatch"):
        load_editor(tampered)
    # a pickle renamed .safetensors is never unpickled
    pickled = tmp_path / "pickle.safetensors"
    torch.save({"editors": []}, pickled)
    with pytest.raises(EditorFileError, match="pickle"):
        load_editor(pickled)


def test_a_composition_that_does_not_fit_the_model_is_refused(tmp_path):
    path = ComposedEditor((_sea(), _mean_diff())).save(tmp_path / "c.safetensors")
    other = make_tiny_model("mistral")  # 3 layers, not 2
    with pytest.raises(EditorFileError, match=r"c\.safetensors: editor is for .* 2 layers"):
        load_editor(path, other)


# ------------------------------------------------------------------------ lm-eval
def test_lm_eval_takes_several_editors_in_order(llama, tmp_path):
    a = _sea().save(tmp_path / "a.safetensors")
    b = _mean_diff().save(tmp_path / "b.safetensors")
    single = ["--model", "spectral-edit", "--model_args", json.dumps({"editor": str(a)})]
    assert cli_arguments([], [str(a)]) == single == cli_arguments([], str(a))
    args = cli_arguments(["--tasks", "x"], [a, b], 2.0)
    assert json.loads(args[-1]) == {"editor": [str(a), str(b)], "alpha": 2.0}
    resolved = _resolve_editor([str(a), str(b)], 2.0, llama)
    assert isinstance(resolved, ComposedEditor) and resolved.alpha == 2.0
    torch.testing.assert_close(
        _logits(llama, resolved),
        _logits(llama, ComposedEditor((_sea(), _mean_diff())).with_options(alpha=2.0)),
        rtol=0,
        atol=0,
    )
    restricted = ComposedEditor((_mean_diff(), _sea(positions="answer")))
    with pytest.raises(UnsupportedEditorError, match="'answer' positions"):
        check_editor_positions(restricted, "c")


# ---------------------------------------------------------------------------- CLI
def _stdout(result):
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_repeated_editor_equals_the_composition_file(tiny_model_dir, tmp_path):
    from spectral_edit.hf.models import load_model

    model, _ = load_model(str(tiny_model_dir))
    width, layers = model.config.hidden_size, len(find_decoder_layers(model))
    gen = torch.Generator().manual_seed(0)
    acts = [torch.randn(12, layers, width, generator=gen) for _ in range(3)]
    sea = fit_from_arrays(
        *acts, layers=list(range(layers)), num_layers=layers, pos_rank=2, neg_rank=2
    )
    md = MeanDifferenceEditor.fit(acts[1], acts[2], layers=list(range(layers)), num_layers=layers)
    a, b = sea.save(tmp_path / "a.safetensors"), md.save(tmp_path / "b.safetensors")
    runner = CliRunner()
    out = tmp_path / "ab.safetensors"
    _stdout(runner.invoke(app, ["compose", str(a), str(b), "--out", str(out)]))
    assert isinstance(load_editor(out), ComposedEditor)
    refused = runner.invoke(app, ["compose", str(a), "--out", str(tmp_path / "one.safetensors")])
    assert refused.exit_code == 2 and "two editors or more" in refused.output

    from .cli_runs import FIXTURES

    def bbq(*editor_args, name):
        folder = tmp_path / name
        args = ["eval", "bbq", "--model", str(tiny_model_dir), "--held-out-from", "2"]
        args += ["--data-dir", str(FIXTURES), "--out", str(folder), *editor_args]
        _stdout(runner.invoke(app, args))
        rows = (folder / "per_item.jsonl").read_text().splitlines()
        return [json.loads(row)["scores"] for row in rows]

    def scores(rows):
        return rows

    repeated = bbq("--editor", str(a), "-e", str(b), name="repeated")
    from_file = bbq("--editor", str(out), name="file")
    single = bbq("--editor", str(a), name="single")
    reversed_ = bbq("--editor", str(b), "--editor", str(a), name="reversed")
    assert scores(repeated) == scores(from_file)
    assert scores(single) != scores(repeated) and scores(reversed_) != scores(repeated)
    narrow = MeanDifferenceEditor.fit(
        acts[1][..., :8], acts[2][..., :8], layers=list(range(layers)), num_layers=layers
    ).save(tmp_path / "narrow.safetensors")
    bad = runner.invoke(
        app, ["compose", str(a), str(narrow), "--out", str(tmp_path / "bad.safetensors")]
    )
    assert bad.exit_code == 2 and "narrow.safetensors" in bad.output
