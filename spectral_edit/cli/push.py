"""``sea push``: an editor file and its generated model card to the Hugging Face Hub."""

from __future__ import annotations

from typing import Annotated

import typer

from ..editors.hub import DEFAULT_FILENAME
from .common import EDITOR_HELP, console, failing_on, load_editor


def push(
    editor: Annotated[str, typer.Argument(help=EDITOR_HELP)],
    repo_id: Annotated[
        str, typer.Argument(help="Hub repository, owner/name (created if missing).")
    ],
    filename: Annotated[
        str, typer.Option(help="File name in the repository (.safetensors).")
    ] = DEFAULT_FILENAME,
    revision: Annotated[
        str | None, typer.Option(help="Branch to push to (created if missing; default: main).")
    ] = None,
    private: Annotated[
        bool | None,
        typer.Option(
            "--private/--public", help="Visibility of a new repository (default: the Hub's)."
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(help="Hub token with write access (default: HF_TOKEN or `hf auth login`)."),
    ] = None,
    card: Annotated[bool, typer.Option(help="Write the generated model card (README.md).")] = True,
    message: Annotated[str | None, typer.Option(help="Commit message.")] = None,
) -> None:
    """Push an editor (validated first) and a model card generated from it to the Hub."""
    from ..editors.hub import HubPushError

    loaded = load_editor(editor)
    with failing_on(HubPushError), console.status(f"pushing to {repo_id} …"):
        pinned = loaded.push_to_hub(
            repo_id,
            filename=filename,
            revision=revision,
            private=private,
            token=token,
            commit_message=message,
            model_card=card,
        )
    latest = type(pinned)(pinned.repo_id, pinned.filename, revision)
    console.print(f"pushed {latest} (commit {pinned.revision})")
    console.print(f"load it with: sea info {latest}   (this exact commit: {pinned})")
