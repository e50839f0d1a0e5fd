"""Other inference-time methods behind the editor interface (fit → apply / save / load),
applied through the project's one hook machinery."""

from .mean_diff import MeanDifferenceEditor

__all__ = ["MeanDifferenceEditor"]
