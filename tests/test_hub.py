"""Editors on the Hugging Face Hub (issue #13, item 3), against a loopback Hub.

:class:`FakeHub` is an ``http.server`` on 127.0.0.1 (a random port) that answers the
requests ``huggingface_hub`` makes: the download endpoint (``HEAD``/``GET
/{repo}/resolve/{revision}/{file}`` with ``X-Repo-Commit``, ``ETag`` and
``Content-Length``; 404s with the Hub's ``X-Error-Code``) and the upload endpoints
(``/api/repos/create``, ``/api/validate-yaml``, ``.../branch/``, ``.../preupload/`` in
regular mode, ``.../commit/`` with its NDJSON body). Files are held per commit, so a
revision is a branch or a commit. ``huggingface_hub.constants`` is pointed at it (endpoint,
cache, token files, offline mode) for each test.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import huggingface_hub
import pytest
import torch
from huggingface_hub import constants

from spectral_edit import Demonstration, SeaOptions, load_editor, write_demos
from spectral_edit.editors.baselines.mean_diff import MeanDifferenceEditor
from spectral_edit.editors.file_format import EditorFileError, EditorModelWarning
from spectral_edit.editors.hub import HubEditorError, HubPushError, HubReference
from spectral_edit.editors.model_card import SEA_BIBTEX, editor_card, hub_base_model
from spectral_edit.experiments.pipeline import demos_file_metadata, fit_editor
from spectral_edit.hf.models import load_model
from tests.failures.refusals import assert_ok, assert_refused, run_cli

DEMOS = [
    Demonstration(f"Question {i}: is the sky {c}?", f"yes {i}", f"no, it is {c}")
    for i, c in enumerate(["blue", "green", "red", "grey", "black", "white"])
]


# --------------------------------------------------------------------- the fake Hub
@dataclasses.dataclass
class FakeHub:
    """The state of the loopback Hub: commits (commit → files), branches per repository,
    the create-repo payloads, and a log of every request (method, path)."""

    url: str = ""
    snapshots: dict[str, dict[str, bytes]] = dataclasses.field(default_factory=dict)
    refs: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    created: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    log: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    refuse_commits: set[str] = dataclasses.field(default_factory=set)

    def commit(self, repo: str, files: dict[str, bytes], branch: str = "main") -> str:
        """Add ``files`` to ``branch`` of ``repo`` (created if missing); the new commit."""
        branches = self.refs.setdefault(repo, {})
        head = dict(self.snapshots.get(branches.get(branch, ""), {}))
        head.update(files)
        oid = hashlib.sha1(f"{repo}{branch}{len(self.snapshots)}".encode()).hexdigest()
        self.snapshots[oid] = head
        branches[branch] = oid
        return oid

    def file(self, repo: str, path: str, revision: str = "main") -> bytes:
        """A file of ``repo`` at ``revision`` (a branch or a commit)."""
        return self.snapshots[self.refs[repo].get(revision, revision)][path]


class _Handler(http.server.BaseHTTPRequestHandler):
    hub: FakeHub

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: Any, status: int = 200) -> None:
        self._send(status, json.dumps(data).encode(), Content_Type="application/json")

    def _resolve(self) -> None:
        self.hub.log.append((self.command, self.path))
        parts = [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]
        repo, revision, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        if parts[2:3] != ["resolve"] or repo not in self.hub.refs:
            return self._send(404, X_Error_Code="RepoNotFound")
        oid = self.hub.refs[repo].get(revision, revision)
        if oid not in self.hub.snapshots or oid not in self.hub.refs[repo].values():
            return self._send(404, X_Error_Code="RevisionNotFound")
        files = self.hub.snapshots[oid]
        if name not in files:
            return self._send(404, X_Error_Code="EntryNotFound", X_Repo_Commit=oid)
        data = files[name]
        etag = f'"{hashlib.sha256(data).hexdigest()}"'
        return self._send(200, data, X_Repo_Commit=oid, ETag=etag)

    do_HEAD = _resolve
    do_GET = _resolve

    def do_POST(self) -> None:
        self.hub.log.append(("POST", self.path))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = urlsplit(self.path).path
        if path == "/api/repos/create":
            payload = json.loads(body)
            repo = f"{payload['organization']}/{payload['name']}"
            self.hub.created[repo] = payload
            self.hub.refs.setdefault(repo, {})
            return self._json({"url": f"{self.hub.url}/{repo}"})
        if path == "/api/validate-yaml":
            return self._json({"errors": [], "warnings": []})
        _, _, _, owner, name, action, *rest = path.split("/")
        repo, revision = f"{owner}/{name}", unquote("/".join(rest))
        if action == "branch":
            branches = self.hub.refs[repo]
            if revision in branches:
                return self._json({"error": "exists"}, 409)
            branches[revision] = branches.get("main", "")
            return self._json({})
        if action == "preupload":
            files = json.loads(body)["files"]
            modes = [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
            ]
            return self._json({"files": modes})
        if action == "commit":
            if repo in self.hub.refuse_commits:
                return self._send(403, b"forbidden", X_Error_Message="You cannot write here")
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            files = {
                entry["value"]["path"]: base64.b64decode(entry["value"]["content"])
                for entry in lines
                if entry["key"] == "file"
            }
            oid = self.hub.commit(repo, files, revision)
            return self._json(
                {"commitUrl": f"{self.hub.url}/{repo}/commit/{oid}", "commitOid": oid}
            )
        return self._send(404)


@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A loopback Hub; huggingface_hub pointed at it, with a fresh cache and no token."""
    state = FakeHub()
    handler = type("Handler", (_Handler,), {"hub": state})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(constants, "ENDPOINT", state.url)
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        state.url + "/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf-tokens"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    yield state
    server.shutdown()
    server.server_close()


# ------------------------------------------------------------------- the editors
@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> Any:
    """The tiny Gemma 3 of ``tiny_model_dir``, loaded as the CLI loads it."""
    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="module")
def fitted(tiny: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A SEA editor fitted on the tiny model, and its local file."""
    model, tokenizer = tiny
    folder = tmp_path_factory.mktemp("editor")
    demos = write_demos(folder / "demos.jsonl", DEMOS)
    options = SeaOptions(layers="all", neutral="prompt", pos_rank=2, neg_rank=3)
    editor = fit_editor(model, tokenizer, DEMOS, options, metadata=demos_file_metadata(demos))
    return editor, editor.save(folder / "editor.safetensors")


def assert_same_editor(a: Any, b: Any) -> None:
    """Same kind, same header (every option and the metadata) and equal tensors."""
    assert type(a) is type(b)
    tensors_a, header_a = a.FORMAT.encode(a)
    tensors_b, header_b = b.FORMAT.encode(b)
    assert json.dumps(header_a, sort_keys=True, default=str) == json.dumps(
        header_b, sort_keys=True, default=str
    )
    assert sorted(tensors_a) == sorted(tensors_b)
    for name in tensors_a:
        assert torch.equal(tensors_a[name], tensors_b[name]), name


def _flip_a_byte(data: bytes) -> bytes:
    """``data`` with one byte of the last tensor changed (the file still parses)."""
    index = len(data) - 3
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


# ----------------------------------------------------------------------- references
@pytest.mark.parametrize(
    ("text", "repo", "filename", "revision"),
    [
        ("hf://alice/sea/editor.safetensors", "alice/sea", "editor.safetensors", None),
        ("hf://alice/sea", "alice/sea", "editor.safetensors", None),
        ("hf://alice/sea@v1.0/sub/dir/e.safetensors", "alice/sea", "sub/dir/e.safetensors", "v1.0"),
        ("hf://alice/sea@refs%2Fpr%2F3/e.safetensors", "alice/sea", "e.safetensors", "refs/pr/3"),
    ],
)
def test_a_reference_parses_and_prints_back(text, repo, filename, revision):
    reference = HubReference.parse(text)
    assert (reference.repo_id, reference.filename, reference.revision) == (repo, filename, revision)
    assert HubReference.parse(str(reference)) == reference


@pytest.mark.parametrize(
    "text",
    [
        "hf://alice",
        "hf://alice/sea/e.bin",
        "hf://alice/sea/../e.safetensors",
        "hf://a/b@/e.safetensors",
    ],
)
def test_a_malformed_reference_is_refused_with_its_form(text):
    with pytest.raises(ValueError, match="hf://owner/repo"):
        HubReference.parse(text)
    with pytest.raises(HubEditorError, match="hf://owner/repo"):
        load_editor(text)


# ------------------------------------------------------------------------ download
def test_a_hub_editor_loads_and_equals_the_local_file(hub, fitted, tiny):
    editor, path = fitted
    oid = hub.commit("alice/sea-tiny", {"editor.safetensors": path.read_bytes()})
    model = tiny[0]
    for loaded in (
        load_editor("hf://alice/sea-tiny/editor.safetensors", model),
        load_editor("hf://alice/sea-tiny", model),  # the default file name
        load_editor(f"hf://alice/sea-tiny@{oid}/editor.safetensors"),
        load_editor("alice/sea-tiny", filename="editor.safetensors", revision="main"),
    ):
        assert_same_editor(loaded, editor)
        assert_same_editor(loaded, load_editor(path))
    cached = list(Path(constants.HF_HUB_CACHE).rglob("editor.safetensors"))
    assert cached and all(p.read_bytes() == path.read_bytes() for p in cached)


def test_a_tampered_file_is_refused_naming_the_repository(hub, fitted):
    _, path = fitted
    hub.commit("alice/tampered", {"editor.safetensors": _flip_a_byte(path.read_bytes())})
    with pytest.raises(EditorFileError) as caught:
        load_editor("hf://alice/tampered/editor.safetensors")
    message = str(caught.value)
    assert "content hash mismatch" in message
    assert (
        "(downloaded from the Hub: editor.safetensors in alice/tampered at revision main)"
        in message
    )
    assert message.startswith("hf://alice/tampered/editor.safetensors: ")
    assert constants.HF_HUB_CACHE not in message and "snapshots" not in message


def test_a_hub_editor_on_another_model_warns_naming_the_reference(hub, fitted):
    from tests.tiny_models import make_tiny_model

    hub.commit("alice/sea-tiny", {"editor.safetensors": fitted[1].read_bytes()})
    reference = "hf://alice/sea-tiny/editor.safetensors"
    with pytest.warns(EditorModelWarning) as caught:
        load_editor(reference, make_tiny_model("gemma3"))  # same shape, not the fitted one
    messages = [str(w.message) for w in caught if w.category is EditorModelWarning]
    assert messages and all(m.startswith(f"{reference}: ") for m in messages)
    assert not any(constants.HF_HUB_CACHE in m for m in messages)


@pytest.mark.parametrize(
    ("reference", "fragments"),
    [
        ("hf://bob/none/editor.safetensors", ["no repository bob/none"]),
        (
            "hf://alice/sea-tiny/other.safetensors",
            ["no file other.safetensors in alice/sea-tiny at revision main"],
        ),
        ("hf://alice/sea-tiny@v9/editor.safetensors", ["no revision 'v9' in alice/sea-tiny"]),
    ],
)
def test_a_missing_repository_revision_or_file_is_named(hub, fitted, reference, fragments):
    hub.commit("alice/sea-tiny", {"editor.safetensors": fitted[1].read_bytes()})
    with pytest.raises(HubEditorError) as caught:
        load_editor(reference)
    assert str(caught.value).startswith(f"{reference}: ")
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_offline_mode_uses_the_cache_and_says_when_it_cannot(hub, fitted, tmp_path, monkeypatch):
    editor, path = fitted
    hub.commit("alice/sea-tiny", {"editor.safetensors": path.read_bytes()})
    reference = "hf://alice/sea-tiny/editor.safetensors"
    load_editor(reference)  # online: downloaded into the cache
    requests = len(hub.log)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert_same_editor(load_editor(reference), editor)
    assert len(hub.log) == requests  # no request at all: the cache only
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(HubEditorError) as caught:
        load_editor(reference)
    message = str(caught.value)
    assert "offline mode is on (HF_HUB_OFFLINE=1)" in message and "HF_HUB_OFFLINE=0" in message
    assert "editor.safetensors in alice/sea-tiny at revision main" in message
    assert len(hub.log) == requests


def test_an_unreachable_hub_without_a_cache_says_so(hub, monkeypatch):
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}",
    )
    with pytest.raises(HubEditorError, match="cannot reach the Hugging Face Hub"):
        load_editor("hf://alice/sea-tiny/editor.safetensors")


# ---------------------------------------------------------------------------- push
def test_push_to_hub_round_trips_with_a_card_from_the_editor(hub, fitted):
    editor, _ = fitted
    editor = dataclasses.replace(editor, metadata={**editor.metadata, "model": "alice/base-lm"})
    pinned = editor.push_to_hub("alice/pushed", private=True)
    assert hub.created["alice/pushed"]["visibility"] == "private"
    assert pinned.revision == hub.refs["alice/pushed"]["main"]
    assert_same_editor(load_editor(str(pinned)), editor)
    assert_same_editor(load_editor("hf://alice/pushed/editor.safetensors"), editor)

    card = huggingface_hub.ModelCard.load("alice/pushed")
    assert card.data.base_model == "alice/base-lm"
    assert card.data.library_name == "spectral-edit"
    assert {"spectral-edit", "sea"} <= set(card.data.tags)
    text = card.text
    pushed = hub.file("alice/pushed", "editor.safetensors")
    meta = editor.metadata
    assert f"`{hashlib.sha256(pushed).hexdigest()}`" in text
    assert f"| layers | {','.join(map(str, editor.layers))} |" in text
    assert f"| site | {editor.site.value} |" in text
    assert f"| demonstrations | {len(DEMOS)} |" in text
    assert (
        f"`{meta['demonstrations_file']}`" in text and f"`{meta['demonstrations_sha256']}`" in text
    )
    for layer, (k_pos, k_neg) in editor.ranks.items():
        assert f"| {layer} | {k_pos} | {k_neg} |" in text
    assert SEA_BIBTEX in text and "Qiu" in text
    assert 'load_editor("hf://alice/pushed/editor.safetensors", model)' in text
    assert 'load_model("alice/base-lm")' in text


def test_push_to_a_branch_and_a_sub_folder_then_load_by_repo_id(hub, fitted):
    editor, _ = fitted
    pinned = editor.push_to_hub("alice/pushed", filename="sea/e2.safetensors", revision="v1")
    assert pinned.revision == hub.refs["alice/pushed"]["v1"]
    assert "sea/e2.safetensors" in hub.snapshots[pinned.revision]
    main = hub.refs["alice/pushed"].get("main")
    assert main is None or "sea/e2.safetensors" not in hub.snapshots[main]
    loaded = load_editor("alice/pushed", filename="sea/e2.safetensors", revision="v1")
    assert_same_editor(loaded, editor)
    assert (
        "hf://alice/pushed@v1/sea/e2.safetensors"
        in hub.file("alice/pushed", "README.md", "v1").decode()
    )


def test_a_refused_push_names_the_repository(hub, fitted):
    editor, _ = fitted
    hub.refuse_commits.add("alice/locked")
    with pytest.raises(HubPushError) as caught:
        editor.push_to_hub("alice/locked")
    message = str(caught.value)
    assert "alice/locked" in message and "HTTP 403" in message and "hf auth login" in message
    with pytest.raises(HubPushError, match="not a Hub repository id"):
        editor.push_to_hub("no-owner")
    with pytest.raises(HubPushError, match="ends in .safetensors"):
        editor.push_to_hub("alice/x", filename="editor.pt")


# ---------------------------------------------------------------------------- cards
def test_the_card_names_a_hub_base_model_only_where_there_is_one(fitted):
    assert hub_base_model("gemma-3-270m") == "google/gemma-3-270m"
    assert hub_base_model("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"
    assert hub_base_model("tiny-gemma3") is None and hub_base_model(None) is None
    editor, _ = fitted
    card = huggingface_hub.ModelCard(editor_card(editor, HubReference("a/b"), file_sha256="0" * 64))
    assert card.data.base_model is None  # the editor's model is a local folder's name
    assert f"| base model | {editor.metadata['model']} |" in card.text


def test_a_baseline_editor_gets_a_card_naming_its_method():
    editor = MeanDifferenceEditor(
        layers=(1,),
        vectors=(torch.ones(4),),
        hidden_size=4,
        num_layers=2,
        alpha=0.5,
        metadata={"model": "gemma-3-270m", "n_demonstrations": 3},
    )
    card = huggingface_hub.ModelCard(editor_card(editor, HubReference("a/b"), file_sha256="f" * 64))
    assert card.data.base_model == "google/gemma-3-270m"
    assert "mean-diff" in card.data.tags
    assert "Mean-difference steering" in card.text
    assert "| alpha | 0.5 |" in card.text and "| layers | 1 |" in card.text
    assert "| demonstrations | 3 |" in card.text


# ----------------------------------------------------------------------------- CLI
def test_sea_push_info_and_generate_through_the_hub(hub, fitted, tiny_model_dir):
    _, path = fitted
    out = assert_ok(run_cli(["push", path, "carol/cli", "--public"]))
    assert "pushed hf://carol/cli/editor.safetensors" in " ".join(out.split())
    assert hub.created["carol/cli"]["visibility"] == "public"
    assert hub.file("carol/cli", "editor.safetensors") == path.read_bytes()

    reference = "hf://carol/cli/editor.safetensors"
    shown = " ".join(assert_ok(run_cli(["info", reference])).split())
    assert reference in shown and tiny_model_dir.name in shown and "0,1" in shown
    assert constants.HF_HUB_CACHE not in shown

    args = ["generate", "Q: is the sky blue?\\nA:", "--model", tiny_model_dir]
    generated = assert_ok(run_cli([*args, "--editor", reference, "--max-new-tokens", "3"]))
    assert "edited (α=1)" in generated


def test_sea_refuses_missing_hub_editors_and_refused_pushes(hub, fitted):
    _, path = fitted
    hub.commit("carol/cli", {"editor.safetensors": path.read_bytes()})
    assert_refused(
        run_cli(["info", "hf://carol/cli/missing.safetensors"]),
        "hf://carol/cli/missing.safetensors",
        "no file missing.safetensors in carol/cli at revision main",
    )
    assert_refused(run_cli(["info", "hf://carol"]), "hf://owner/repo")
    hub.refuse_commits.add("carol/locked")
    assert_refused(
        run_cli(["push", path, "carol/locked"]), "cannot push", "carol/locked", "HTTP 403"
    )
    assert_refused(
        run_cli(["push", path, "carol/x", "--filename", "e.bin"]), "ends in .safetensors"
    )


@pytest.mark.parametrize(
    "reference", ["hf://alice/sea/editor.safetensors", "hf://alice/sea@v1/sub/e.safetensors"]
)
def test_a_hub_reference_is_recorded_as_it_is(reference):
    """Reports record ``--editor`` through ``shareable``: a reference is no local path, so
    it is kept whole (a cache path would be cut to its name)."""
    from spectral_edit.evaluate.results import shareable

    assert shareable({"editor": reference}) == {"editor": reference}
