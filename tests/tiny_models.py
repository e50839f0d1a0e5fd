"""Tiny random causal LMs and a tiny tokenizer, built in-process (no download).

Every architecture the project claims to support gets a 2–3 layer model with hidden size
32–64 and a vocabulary of :data:`TINY_VOCAB_SIZE` (>= the tiny tokenizer's length), so
the models and the tokenizer can be mixed freely. Models are float32, in eval mode,
with the "eager" attention implementation (deterministic and correct under padding),
and their weights depend only on ``(arch, seed)``: building one does not disturb the
global torch RNG.

The tokenizer is byte-level BPE: every string round-trips (``decode(encode(s)) == s``,
Unicode included), a few common words are single tokens (so tokenising ``a + b`` can
differ from tokenising ``a`` and ``b`` apart, as with real tokenizers), and encoding
prepends ``<bos>``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma3TextConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    OPTConfig,
    Phi3Config,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "PAD_ID",
    "TINY_ARCHS",
    "TINY_VOCAB_SIZE",
    "UNK_ID",
    "make_tiny_model",
    "make_tiny_tokenizer",
]

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>"]
TINY_VOCAB_SIZE = 320
"""Vocabulary size of every tiny model (a little above the tokenizer's length)."""

# Words merged into single tokens ("Ġ" is the byte-level space). Invented, not from data.
_WORDS = [
    "Ġthe", "Ġa", "Ġis", "Ġof", "Ġand", "Ġto", "Ġin", "ĠQ", "ĠA", "Ġyes", "Ġno",
    "Ġtrue", "Ġfalse", "Ġanswer", "Ġquestion", "the", "ing", "ed",
]  # fmt: skip

# GPT-2 style split: words, numbers, punctuation runs, whitespace, each with a leading space.
_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def _bpe_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Specials, then the 256 byte symbols, then each word's prefix chain as merges."""
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in _WORDS:
        for end in range(2, len(word) + 1):
            left, right = word[: end - 1], word[end - 1]
            merged = left + right
            if merged not in vocab:
                vocab[merged] = len(vocab)
                merges.append((left, right))
    return vocab, merges


def make_tiny_tokenizer(padding_side: str = "right") -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of ~300 tokens with ``<pad> <bos> <eos> <unk>`` = 0..3.

    ``tok("x")["input_ids"]`` starts with ``BOS_ID``; ``eos`` is never added
    automatically. ``pad_token`` is set; ``padding_side`` is ``"right"`` or ``"left"``.
    ``len(tokenizer) <= TINY_VOCAB_SIZE``.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    vocab, merges = _bpe_vocab_and_merges()
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(SPECIAL_TOKENS)
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A",
        pair="<bos> $A $B:1",
        special_tokens=[("<bos>", BOS_ID)],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side=padding_side,
        clean_up_tokenization_spaces=False,
    )
    assert len(tokenizer) <= TINY_VOCAB_SIZE, len(tokenizer)
    return tokenizer


_TOKEN_IDS = {"pad_token_id": PAD_ID, "bos_token_id": BOS_ID, "eos_token_id": EOS_ID}
TINY_CONTEXT = 4096
"""The context (``max_position_embeddings``) of the tiny rotary-position models: longer
than any test's sequence (the TruthfulQA primer alone is ~500 tiny tokens), as a real
model's is, so the library's length check refuses only what a test makes too long on
purpose. GPT-2 and OPT learn their positions (weights): they keep 128."""
_COMMON = {"vocab_size": TINY_VOCAB_SIZE, "max_position_embeddings": TINY_CONTEXT, **_TOKEN_IDS}
_LEARNED_POSITIONS = {**_COMMON, "max_position_embeddings": 128}


def _llama() -> PretrainedConfig:
    return LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, initializer_range=0.1, tie_word_embeddings=False, **_COMMON,
    )  # fmt: skip


def _mistral() -> PretrainedConfig:
    return MistralConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, sliding_window=None, initializer_range=0.1, **_COMMON,
    )  # fmt: skip


def _gemma2() -> PretrainedConfig:
    return Gemma2Config(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8, sliding_window=64,
        initializer_range=0.1, **_COMMON,
    )  # fmt: skip


def _gemma3() -> PretrainedConfig:
    return Gemma3TextConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=1, head_dim=8, query_pre_attn_scalar=8, sliding_window=8,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        initializer_range=0.1, **_COMMON,
    )  # fmt: skip


def _qwen2() -> PretrainedConfig:
    return Qwen2Config(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, initializer_range=0.1, tie_word_embeddings=True, **_COMMON,
    )  # fmt: skip


def _qwen3() -> PretrainedConfig:
    return Qwen3Config(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, initializer_range=0.1, **_COMMON,
    )  # fmt: skip


def _phi3() -> PretrainedConfig:
    return Phi3Config(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, original_max_position_embeddings=128, initializer_range=0.1,
        **_COMMON,
    )  # fmt: skip


def _gpt2() -> PretrainedConfig:
    return GPT2Config(
        n_embd=32, n_layer=2, n_head=4, n_positions=128, vocab_size=TINY_VOCAB_SIZE,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.1, **_TOKEN_IDS,
    )  # fmt: skip


def _gpt_neox() -> PretrainedConfig:
    return GPTNeoXConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        initializer_range=0.1, **_COMMON,
    )  # fmt: skip


def _opt() -> PretrainedConfig:
    return OPTConfig(
        hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
        word_embed_proj_dim=32, dropout=0.0, init_std=0.1, **_LEARNED_POSITIONS,
    )  # fmt: skip


_CONFIGS: dict[str, Callable[[], PretrainedConfig]] = {
    "llama": _llama,
    "mistral": _mistral,
    "gemma2": _gemma2,
    "gemma3": _gemma3,
    "qwen2": _qwen2,
    "qwen3": _qwen3,
    "phi3": _phi3,
    "gpt2": _gpt2,
    "gpt_neox": _gpt_neox,
    "opt": _opt,
}

TINY_ARCHS: list[str] = list(_CONFIGS)
"""Architecture names accepted by :func:`make_tiny_model`: the HF ``model_type``, except
``"gemma3"`` whose model is ``Gemma3ForCausalLM`` with ``model_type == "gemma3_text"``."""


def tiny_config(arch: str) -> PretrainedConfig:
    """The (fresh) config :func:`make_tiny_model` uses for ``arch``."""
    try:
        build = _CONFIGS[arch]
    except KeyError:
        raise ValueError(
            f"unknown tiny architecture {arch!r}; choose one of {TINY_ARCHS}"
        ) from None
    return build()


def make_tiny_model(arch: str, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised causal LM of architecture ``arch``.

    float32, eval mode, eager attention; ``config.vocab_size == TINY_VOCAB_SIZE``.
    Same ``(arch, seed)`` gives bit-identical weights; the global RNG state is restored.
    """
    config = tiny_config(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(
            config, attn_implementation="eager", dtype=torch.float32
        )
    model.eval()
    return model


def first_argmax(values) -> int:
    """Reference argmax for tests: the first maximum wins."""
    best = 0
    for i, value in enumerate(values):
        if value > values[best]:
            best = i
    return best
