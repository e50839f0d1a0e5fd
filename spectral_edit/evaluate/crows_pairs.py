"""CrowS-Pairs: does the model give the more stereotyping sentence a higher likelihood?

Each sentence is scored by its **total** log-likelihood from the start of text: the
scorer's empty context (the model's start token, e.g. BOS) followed by the sentence
exactly as in the file (no added space). This is lm-evaluation-harness's
``crows_pairs_english`` protocol (context ``""``, both sentences as choices). The two
sentences of a pair are one scorer request, so they are scored in one batch.

Reported (via :func:`spectral_edit.evaluate.metrics.crows_pairs.crows_metrics`, percent):
the share of pairs whose ``sent_more`` scores strictly higher than ``sent_less``, overall,
per ``bias_type`` and per ``stereo_antistereo`` direction. 50% means no preference; a tie
counts as not preferring ``sent_more``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn
from transformers import PreTrainedTokenizerBase

from ..data.crows_pairs import CrowsPair
from .metrics.crows_pairs import crows_metrics
from .results import RecordsResult
from .scorer import ChoiceRequest, score_requests

__all__ = ["CrowsPairsResult", "evaluate_crows_pairs"]


def evaluate_crows_pairs(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[CrowsPair],
    *,
    batch_size: int = 16,
    progress: bool | str = False,
) -> CrowsPairsResult:
    """Score both sentences of every pair and report the preference for ``sent_more``.

    Per-pair record keys: ``index, bias_type, stereo_antistereo, logprob_more,
    logprob_less, n_tokens_more, n_tokens_less, prefers_more`` (strictly higher).

    Raises:
        ValueError: ``pairs`` is empty.
    """
    if not pairs:
        raise ValueError("evaluate_crows_pairs: no pairs")
    started = time.perf_counter()
    requests = [ChoiceRequest("", (p.sent_more, p.sent_less)) for p in pairs]
    scored = score_requests(
        model,
        tokenizer,
        requests,
        batch_size=batch_size,
        progress="CrowS-Pairs" if progress is True else progress,
    )
    more = [s[0].logprob for s in scored]
    less = [s[1].logprob for s in scored]
    per_pair = [
        {
            "index": i,
            "bias_type": p.bias_type,
            "stereo_antistereo": p.stereo_antistereo,
            "logprob_more": m.logprob,
            "logprob_less": le.logprob,
            "n_tokens_more": m.n_tokens,
            "n_tokens_less": le.n_tokens,
            "prefers_more": m.logprob > le.logprob,
        }
        for i, (p, (m, le)) in enumerate(zip(pairs, scored, strict=True))
    ]
    by_type = crows_metrics(more, less, [p.bias_type for p in pairs])
    by_direction = crows_metrics(more, less, [p.stereo_antistereo for p in pairs])["by_type"]
    summary: dict[str, Any] = {
        "n": len(pairs),
        **by_type,
        "by_direction": by_direction,
        "seconds": time.perf_counter() - started,
    }
    return CrowsPairsResult(per_pair, summary)


@dataclass(frozen=True)
class CrowsPairsResult(RecordsResult):
    """Per-pair records (JSON-ready dicts, input order) and the summary.

    ``summary``: ``n``, ``overall`` and ``by_type`` from :func:`crows_metrics`
    (``{"n", "pct_more", "n_ties"}`` each), ``by_direction`` (the same, grouped by
    ``stereo_antistereo``) and ``seconds``.
    """

    RECORDS: ClassVar[str] = "per_pair"
    per_pair: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)
