"""Spectral Editing of Activations (SEA) for Hugging Face causal language models.

Fit offline from demonstrations, edit online through forward hooks::

    from spectral_edit import load_model, read_demos, capture_demos, fit_from_arrays

    model, tokenizer = load_model("gemma-3-270m")
    acts = capture_demos(model, tokenizer, read_demos("demos.jsonl"), layers=range(10, 18))
    editor = fit_from_arrays(acts.neutral, acts.positive, acts.negative,
                             layers=acts.layers, num_layers=18, pos_ratio=0.99, neg_ratio=0.99)
    with editor.apply(model):
        ...
"""

from .core.options import SeaOptions
from .demos.activations import capture_demos
from .demos.format import Demonstration, read_demos, write_demos
from .editors.file_format import EditorFileError
from .editors.registry import load_editor
from .editors.sea import SpectralEditor
from .editors.sea_fit import SpectralFitter, fit_from_arrays
from .hf.capture import capture
from .hf.layers import find_decoder_layers, parse_layers
from .hf.models import load_model

__version__ = "0.1.0"

__all__ = [
    "Demonstration",
    "EditorFileError",
    "SeaOptions",
    "SpectralEditor",
    "SpectralFitter",
    "capture",
    "capture_demos",
    "find_decoder_layers",
    "fit_from_arrays",
    "load_editor",
    "load_model",
    "parse_layers",
    "read_demos",
    "write_demos",
]
