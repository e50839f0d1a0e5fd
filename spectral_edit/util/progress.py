"""Progress bars for long loops (tqdm), switched by a ``progress`` argument."""

from __future__ import annotations

from tqdm.auto import tqdm


def progress_bar(total: int, progress: bool | str, default_label: str, unit: str) -> tqdm:
    """A tqdm bar over ``total`` items; ``progress`` False hides it, a string labels it."""
    return tqdm(
        total=total,
        desc=progress if isinstance(progress, str) else default_label,
        disable=not progress,
        unit=unit,
    )
