"""Other inference-time methods behind the editor interface (fit → apply / save / load),
applied through the project's one hook machinery."""

from .iti import ITIEditor
from .leace import LeaceEditor
from .lora import LoRAEditor
from .mean_diff import MeanDifferenceEditor
from .pca_vector import PCAVectorEditor

__all__ = ["ITIEditor", "LeaceEditor", "LoRAEditor", "MeanDifferenceEditor", "PCAVectorEditor"]
