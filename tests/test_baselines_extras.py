"""The baselines that need an optional package (peft for LoRA, concept-erasure for LEACE)
say which extra to install when it is missing, and only when they need it."""

import sys

import pytest
import torch

from spectral_edit.demos.format import Demonstration
from spectral_edit.editors.baselines import LeaceEditor, LoRAEditor
from spectral_edit.util.extras import MissingExtraError

from .tiny_models import make_tiny_model, make_tiny_tokenizer


def test_leace_fit_without_concept_erasure_names_the_extra(monkeypatch, tmp_path):
    positive, negative = torch.randn(6, 1, 8), torch.randn(6, 1, 8)
    editor = LeaceEditor.fit(positive, negative, layers=[0], num_layers=1)
    path = editor.save(tmp_path / "leace.safetensors")
    monkeypatch.setitem(sys.modules, "concept_erasure", None)
    with pytest.raises(MissingExtraError, match="baselines") as info:
        LeaceEditor.fit(positive, negative, layers=[0], num_layers=1)
    assert "concept_erasure" in str(info.value) and "LEACE" in str(info.value)
    LeaceEditor.load(path)  # a saved editor loads (and applies) without the package


def test_lora_training_without_peft_names_the_extra(monkeypatch):
    model, tokenizer = make_tiny_model("llama"), make_tiny_tokenizer()
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(MissingExtraError, match="baselines") as info:
        LoRAEditor.train(model, tokenizer, [Demonstration("Q: x A:", "yes", "no")], steps=1)
    assert "peft" in str(info.value) and "LoRA" in str(info.value)
