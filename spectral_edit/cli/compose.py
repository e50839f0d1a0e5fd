"""``sea compose``: several editor files → one composition file (applied in their order)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import EDITOR_HELP, AlphaOpt, fail, load_editor
from .tables import print_table


def compose(
    editors: Annotated[
        list[str],
        typer.Argument(help=EDITOR_HELP + " Two or more, in the order they are to act."),
    ],
    out: Annotated[Path, typer.Option(help="The composition file to write (.safetensors).")],
    alpha: AlphaOpt = None,
) -> None:
    """Compose editors (of any kinds, fitted on one model) into one editor file: where
    several edit one module, the first listed acts first; --alpha scales every member's
    own strength."""
    from ..editors.composition import members_of

    if len(editors) < 2:
        raise fail("sea compose needs two editors or more (in the order they are to act)")
    loaded = load_editor(editors, alpha=alpha)
    loaded.save(out)
    members = members_of(loaded)
    sources = editors if len(editors) == len(members) else [""] * len(members)
    rows = [
        [index, source, type(member).__name__, f"{member.alpha:g}"]
        for index, (source, member) in enumerate(zip(sources, members, strict=True))
    ]
    print_table(f"composition {out}", ["order", "editor", "kind", "alpha"], rows)
