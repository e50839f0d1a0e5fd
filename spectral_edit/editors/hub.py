"""Editors on the Hugging Face Hub: ``hf://`` references, downloads, and pushes.

A Hub editor is named by a :class:`HubReference`, written
``hf://owner/repo[@revision]/path/in/repo.safetensors``: the repository id (two parts),
an optional revision after ``@`` (a branch, tag or commit; ``main`` when left out; a
revision holding ``/``, e.g. ``refs/pr/1``, is written URL-encoded: ``refs%2Fpr%2F1``),
then the file's path in the repository (:data:`DEFAULT_FILENAME` when left out).

Downloads go through :func:`huggingface_hub.hf_hub_download`, so they use its cache
(``HF_HOME`` / ``HF_HUB_CACHE``), its token handling (``HF_TOKEN``, ``hf auth login``) and
its offline mode (``HF_HUB_OFFLINE=1``: cached files only); every failure is a
:class:`HubEditorError` naming the reference and what to do. The downloaded file is then
read by the same validating reader as a local file (:mod:`.registry`), under the
reference's name: what a Hub editor is recorded and reported as is its ``hf://``
reference, never the local cache path.

:func:`push_editor` (behind ``Editor.push_to_hub`` and ``sea push``) uploads an editor
file and its model card (:mod:`.model_card`) in one commit.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from ..util.atomic import OutputError, sha256_file
from .file_format import EditorFileError

if TYPE_CHECKING:
    from .base import Editor

__all__ = [
    "DEFAULT_FILENAME",
    "HUB_SCHEME",
    "HubEditorError",
    "HubPushError",
    "HubReference",
    "download_editor",
    "hub_reference",
    "push_editor",
]

HUB_SCHEME = "hf://"
"""How an editor reference on the Hub starts."""

DEFAULT_FILENAME = "editor.safetensors"
"""The file an editor is pushed to, and read from when a reference names none."""

CARD_FILENAME = "README.md"
"""The model card's file in the repository."""

_REPO_PART = re.compile(r"^[A-Za-z0-9][\w.\-]*$")


class HubEditorError(EditorFileError):
    """An editor on the Hub cannot be found, reached or read; the message names the
    ``hf://`` reference (repository, revision and file) and what to do."""


class HubPushError(OutputError):
    """An editor could not be pushed to the Hub; the message names the repository and why.
    Nothing was committed (a Hub commit is atomic)."""


@dataclasses.dataclass(frozen=True)
class HubReference:
    """An editor file on the Hub: ``repo_id`` (``owner/name``), ``filename`` (a relative
    POSIX path in the repository) and ``revision`` (``None``: the default branch).

    Invariants (checked on construction, ``ValueError`` otherwise): the repository id has
    two parts of letters, digits, ``-``, ``_`` and ``.``; the file name is relative, has no
    ``..`` part and ends in ``.safetensors``; the revision, if given, is not empty.
    ``str(reference)`` is its ``hf://`` form, which :meth:`parse` reads back.
    """

    repo_id: str
    filename: str = DEFAULT_FILENAME
    revision: str | None = None

    def __post_init__(self) -> None:
        parts = self.repo_id.split("/")
        if len(parts) != 2 or not all(_REPO_PART.match(p) and ".." not in p for p in parts):
            raise ValueError(
                f"{self.repo_id!r} is not a Hub repository id: expected owner/name (letters, "
                "digits, '-', '_' and '.')"
            )
        name = PurePosixPath(self.filename)
        if not self.filename or name.is_absolute() or ".." in name.parts or "\\" in self.filename:
            raise ValueError(f"{self.filename!r} is not a file path inside a repository")
        if name.suffix != ".safetensors":
            raise ValueError(f"{self.filename!r}: an editor file ends in .safetensors")
        if self.revision is not None and not self.revision.strip():
            raise ValueError("an empty revision; leave it out for the default branch")

    @classmethod
    def parse(cls, text: str) -> HubReference:
        """Read ``hf://owner/repo[@revision][/path/file.safetensors]``.

        Raises:
            ValueError: not of that form (the message shows the form).
        """
        if not text.startswith(HUB_SCHEME):
            raise ValueError(f"{text!r} is not a Hub reference (hf://...)")
        owner, _, rest = text[len(HUB_SCHEME) :].partition("/")
        repo, _, filename = rest.partition("/")
        repo, at, revision = repo.partition("@")
        try:
            return cls(
                f"{owner}/{repo}", filename or DEFAULT_FILENAME, unquote(revision) if at else None
            )
        except ValueError as error:
            raise ValueError(
                f"{text!r}: {error}; a Hub editor is written "
                "hf://owner/repo[@revision]/path/file.safetensors"
            ) from None

    def __str__(self) -> str:
        revision = "" if self.revision is None else "@" + quote(self.revision, safe="")
        return f"{HUB_SCHEME}{self.repo_id}{revision}/{self.filename}"

    @property
    def at(self) -> str:
        """``file in repo at revision``, for messages."""
        return f"{self.filename} in {self.repo_id} at revision {self.revision or 'main'}"


def hub_reference(
    source: str | os.PathLike[str], filename: str | None = None, revision: str | None = None
) -> HubReference | None:
    """The Hub reference ``source`` names, or ``None`` for a local path.

    A string starting with ``hf://`` is parsed (``filename`` and ``revision`` must then be
    left out: the reference carries them); a string with ``filename`` or ``revision`` given
    is a repository id; anything else (a :class:`~pathlib.Path`, any other string) is a
    local path.

    Raises:
        HubEditorError: a malformed reference, or ``filename``/``revision`` given with a
            local path or beside an ``hf://`` reference.
    """
    text = os.fspath(source)
    is_str = isinstance(source, str)
    try:
        if is_str and text.startswith(HUB_SCHEME):
            if filename is not None or revision is not None:
                raise ValueError(
                    f"{text!r}: pass filename/revision with a repository id, not beside an "
                    "hf:// reference (it carries its own)"
                )
            return HubReference.parse(text)
        if filename is None and revision is None:
            return None
        if not is_str:
            raise ValueError(f"{text}: filename/revision are for a Hub repository id, not a path")
        return HubReference(text, filename or DEFAULT_FILENAME, revision)
    except ValueError as error:
        raise HubEditorError(str(error)) from None


# ------------------------------------------------------------------------- download
def download_editor(
    reference: HubReference, *, token: str | bool | None = None, force_download: bool = False
) -> Path:
    """The local (cached) copy of the Hub editor file ``reference``, downloaded if needed
    (:func:`huggingface_hub.hf_hub_download`: its cache, token and offline mode). The file
    is not validated here: read it as any editor file.

    Raises:
        HubEditorError: the repository, revision or file does not exist (or is private or
            gated), the Hub cannot be reached and the file is not cached (offline mode
            included), or another Hub error; the message names the reference.
    """
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(
            reference.repo_id,
            reference.filename,
            revision=reference.revision,
            token=token,
            force_download=force_download,
        )
    except Exception as error:  # noqa: BLE001 - every Hub failure is named below
        raise HubEditorError(f"{reference}: {_download_failure(reference, error)}") from error
    return Path(path)


def _offline() -> bool:
    """Whether huggingface_hub is in offline mode (``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants

    check = getattr(constants, "is_offline_mode", None)
    return bool(check() if callable(check) else constants.HF_HUB_OFFLINE)


def _download_failure(reference: HubReference, error: Exception) -> str:
    """What went wrong downloading ``reference``, and what to do (for the message)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    get = f"hf download {reference.repo_id} {reference.filename}" + (
        f" --revision {reference.revision}" if reference.revision else ""
    )
    if isinstance(error, LocalEntryNotFoundError):
        if _offline():
            return (
                f"offline mode is on (HF_HUB_OFFLINE=1) and {reference.at} is not in the "
                f"Hugging Face cache: set HF_HUB_OFFLINE=0 (or unset it) to download it, or "
                f"download it first while online (`{get}`)"
            )
        return (
            f"cannot reach the Hugging Face Hub ({constants.ENDPOINT}) and {reference.at} is "
            "not in the cache: check the network connection (or HF_ENDPOINT), then retry"
        )
    if isinstance(error, GatedRepoError):
        return (
            f"{reference.repo_id} is gated: request access on the Hub, then log in "
            "(`hf auth login`) or set HF_TOKEN"
        )
    if isinstance(error, RepositoryNotFoundError):
        return (
            f"no repository {reference.repo_id} on the Hub (looking for {reference.at}); "
            "check the name, or log in (`hf auth login` / HF_TOKEN) if it is private"
        )
    if isinstance(error, RevisionNotFoundError):
        return (
            f"no revision {reference.revision!r} in {reference.repo_id}; check the branch, "
            "tag or commit"
        )
    if isinstance(error, EntryNotFoundError):
        return f"no file {reference.at}; check the file name (and the revision)"
    if isinstance(error, HfHubHTTPError):
        status = getattr(getattr(error, "response", None), "status_code", "?")
        return f"the Hub refused {reference.at} (HTTP {status}): {_first_line(error)}"
    return f"cannot download {reference.at}: {type(error).__name__}: {_first_line(error)}"


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [""])[0]


# ----------------------------------------------------------------------------- push
def push_editor(
    editor: Editor,
    repo_id: str,
    *,
    filename: str = DEFAULT_FILENAME,
    revision: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    commit_message: str | None = None,
    model_card: bool = True,
) -> HubReference:
    """Push ``editor`` to the Hub repository ``repo_id`` (created if missing, ``private``
    as given) as ``filename`` on ``revision`` (a branch, created if missing; ``None``:
    the default branch), with a generated model card (``README.md``, replacing the
    repository's; ``model_card=False`` leaves it alone), in one commit.

    The file uploaded is exactly what :meth:`~.base.EditorBase.save` writes; the card
    records its sha256. Returns the reference pinned to the commit made
    (``hf://repo_id@<commit>/filename``), which loads exactly the file pushed.

    Raises:
        HubPushError: an invalid repository id or file name, or the Hub refused (no token
            or no write access, ...); nothing was committed.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    from .model_card import editor_card

    try:
        target = HubReference(repo_id, filename, revision)
    except ValueError as error:
        raise HubPushError(f"cannot push to {repo_id}: {error}") from None
    message = commit_message or f"Upload {type(editor).__name__} {filename} (spectral-edit)"
    with tempfile.TemporaryDirectory(prefix="sea-push-") as folder:
        path = editor.save(Path(folder) / PurePosixPath(filename).name)
        operations = [CommitOperationAdd(path_in_repo=filename, path_or_fileobj=str(path))]
        if model_card:
            card = editor_card(editor, target, file_sha256=sha256_file(path))
            operations.append(
                CommitOperationAdd(path_in_repo=CARD_FILENAME, path_or_fileobj=card.encode())
            )
        api = HfApi(token=token)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision is not None and not revision.startswith("refs/"):
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            commit = api.create_commit(
                repo_id, operations, commit_message=message, revision=revision
            )
        except Exception as error:  # noqa: BLE001 - every Hub failure is named
            raise HubPushError(_push_failure(target, error)) from error
    return dataclasses.replace(target, revision=commit.oid)


def _push_failure(target: HubReference, error: Exception) -> str:
    """What went wrong pushing to ``target``, and what to do (for the message)."""
    status: Any = getattr(getattr(error, "response", None), "status_code", None)
    hint = ""
    if status in (401, 403):
        hint = ": log in with a token that may write there (`hf auth login`, HF_TOKEN or --token)"
    where = f"{target.repo_id} (revision {target.revision or 'main'})"
    code = f"HTTP {status}, " if status else ""
    return f"cannot push {target.filename} to {where}: {code}{_first_line(error)}{hint}"
