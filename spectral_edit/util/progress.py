"""Progress bars for long loops (tqdm), switched by a ``progress`` argument."""

from __future__ import annotations

from tqdm.auto import tqdm


def progress_bar(
    total: int | None,
    progress: bool | str,
    default_label: str,
    unit: str,
    *,
    unit_scale: bool = False,
    leave: bool = True,
) -> tqdm:
    """A tqdm bar over ``total`` items (``None``: unknown); ``progress`` False hides it, a
    string labels it (else ``default_label``).

    ``unit_scale`` shows SI prefixes (for bytes); ``leave=False`` clears the bar when done.
    """
    return tqdm(
        total=total,
        desc=progress if isinstance(progress, str) else default_label,
        disable=not progress,
        unit=unit,
        unit_scale=unit_scale,
        leave=leave,
    )
