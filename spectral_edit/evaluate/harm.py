"""Harm of an editor where it should do nothing: the next-token KL on neutral text, and the
quality of free generation.

Two measures, each against the unedited model, whose side is computed once
(:func:`build_harm_reference`) and reused for every editor and setting:

1. **KL on neutral text** (:mod:`spectral_edit.evaluate.kl`): per-token
   ``KL(edited ‖ unedited)`` on :func:`neutral_texts` (HaluEval general ChatGPT responses,
   unrelated to the demonstrations).
2. **Free generation**: greedy continuations (:func:`~spectral_edit.hf.generation.generate_greedy`,
   at most ``gen_tokens`` new tokens) of a fixed prompt set (:func:`harm_prompts`):
   TruthfulQA questions after the QA primer (``kind="qa"``, cut at the end of the answer by
   :data:`~spectral_edit.hf.generation.ANSWER_STOPS`) and :data:`OPEN_PROMPTS` without the
   primer (``kind="open"``, **no** stop strings: the continuation runs to ``gen_tokens`` or
   EOS, so that loops have room to show). Per generation: the repeated-4-gram rate and
   distinct-2 of its :func:`~spectral_edit.evaluate.metrics.text.words`, and its fluency:
   the **unedited** model's negative log-likelihood of the continuation given its prompt
   (the one scorer, :func:`~spectral_edit.evaluate.scorer.score_requests`, run outside the
   editor's hooks). Corpus values: repeat4 and distinct2 are means over generations in
   percent (:func:`~spectral_edit.evaluate.metrics.text.corpus_rate`); ``fluency_ppl`` is
   ``exp(total NLL / total continuation tokens)`` (``None`` if no generation has a token).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import nn
from transformers import PreTrainedTokenizerBase

from ..data.halueval import load_halueval_general
from ..data.locate import resolve
from ..data.splits import truthfulqa_questions
from ..data.truthfulqa import QA_PRIMER
from ..demos.prompts import PLAIN, PromptFormat, qa_prompt
from ..hf.generation import ANSWER_STOPS, generate_greedy
from ..hf.tokens import encode_pair
from ..util.atomic import atomic_write_text
from ..util.report import fmt, markdown_table, write_jsonl
from .kl import KLReference, KLResult, build_kl_reference, measure_kl
from .metrics.text import corpus_rate, distinct_n, repeated_ngram_rate, words
from .results import write_summary
from .scorer import ChoiceRequest, score_requests

__all__ = [
    "OPEN_PROMPTS",
    "GenerationMeasures",
    "HarmPrompt",
    "HarmReference",
    "HarmResult",
    "build_harm_reference",
    "default_prompts",
    "evaluate_harm",
    "harm_prompts",
    "neutral_texts",
]

OPEN_PROMPTS: tuple[str, ...] = (
    "The history of the bicycle begins",
    "Here is a recipe for",
    "The main reasons people move to big cities are",
    "Photosynthesis is the process by which",
    "A good way to learn a new language is to",
    "The old lighthouse keeper looked out at the sea and",
    "In the morning, the small harbour town",
    "The rules of chess are simple:",
    "My favourite thing about autumn is",
    "When the train finally arrived at the station,",
)
"""Open prompts continued without the QA primer and without stop strings."""

PromptKind = Literal["qa", "open"]


@dataclass(frozen=True)
class HarmPrompt:
    """A prompt to continue: ``kind="qa"`` (a TruthfulQA question after the primer,
    generation cut at the answer's end) or ``"open"`` (no stop strings)."""

    text: str
    kind: PromptKind = "open"

    @property
    def stops(self) -> tuple[str, ...]:
        """The stop strings of its generation."""
        return ANSWER_STOPS if self.kind == "qa" else ()

    @property
    def shown(self) -> str:
        """The prompt as a report shows it: a QA prompt without its primer."""
        if self.kind == "qa" and self.text.startswith(QA_PRIMER):
            return self.text[len(QA_PRIMER) :].strip()
        return self.text


def neutral_texts(
    data_dir: str | os.PathLike[str] | None = None, limit: int | None = 32, *, offset: int = 0
) -> list[str]:
    """Neutral texts for the KL: the non-empty (not whitespace-only) ``chatgpt_response``
    of HaluEval's ``halueval/general_data.json``, in file order, skipping the first
    ``offset`` of them, then the first ``limit`` (``None`` = all). Texts ``[m, 2m)`` are
    ``neutral_texts(limit=m, offset=m)``.

    Raises:
        DataFileMissing, DataFormatError: from locating or reading the file.
        ValueError: a negative ``limit`` or ``offset``.
    """
    if offset < 0 or (limit is not None and limit < 0):
        raise ValueError(f"limit and offset must be >= 0, got {limit} and {offset}")
    records = load_halueval_general(resolve("halueval/general_data.json", data_dir))
    texts = [r.chatgpt_response for r in records if r.chatgpt_response.strip()][offset:]
    return texts if limit is None else texts[:limit]


def harm_prompts(
    questions: Sequence[str] = (),
    open_prompts: Sequence[str] = OPEN_PROMPTS,
    prompt_format: PromptFormat = PLAIN,
) -> tuple[HarmPrompt, ...]:
    """The QA prompts of ``questions`` (:func:`~spectral_edit.demos.prompts.qa_prompt` in
    ``prompt_format``: plain, or a chat template), then the open prompts (plain text to
    continue, in every format)."""
    qa = tuple(HarmPrompt(qa_prompt(q, prompt_format), "qa") for q in questions)
    return qa + tuple(HarmPrompt(p, "open") for p in open_prompts)


def default_prompts(
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | None = 32,
    *,
    mc_file: str = "mc_task_v0.json",
    prompt_format: PromptFormat = PLAIN,
) -> tuple[HarmPrompt, ...]:
    """The fixed prompt set: the first ``limit`` TruthfulQA questions of ``mc_file``
    (:func:`~spectral_edit.data.splits.truthfulqa_questions`) after the QA primer (under a
    chat template: as the user turn), then every one of :data:`OPEN_PROMPTS`.

    Raises:
        DataFileMissing, DataFormatError: from locating or reading the file.
    """
    questions = truthfulqa_questions(mc_file, data_dir, limit=limit)
    return harm_prompts([q.question for q in questions], prompt_format=prompt_format)


@dataclass(frozen=True)
class GenerationMeasures:
    """The measures of one generation: ``repeat4`` (repeated-4-gram rate) and
    ``distinct2`` of its words (fractions in [0, 1]), ``words``, and the unedited model's
    ``nll`` (nats, summed) of its ``tokens`` continuation tokens (0 and 0 for an empty
    generation)."""

    repeat4: float
    distinct2: float
    words: int
    nll: float
    tokens: int

    @property
    def ppl(self) -> float | None:
        """``exp(nll / tokens)``; ``None`` without tokens."""
        return math.exp(self.nll / self.tokens) if self.tokens else None

    @property
    def record(self) -> dict[str, Any]:
        """JSON-ready fields (with ``ppl``)."""
        return {
            "repeat4": self.repeat4,
            "distinct2": self.distinct2,
            "words": self.words,
            "nll": self.nll,
            "tokens": self.tokens,
            "ppl": self.ppl,
        }


def corpus_measures(measures: Sequence[GenerationMeasures]) -> dict[str, Any]:
    """``{"repeat4", "distinct2"}`` (mean over generations, percent), ``fluency_ppl``
    (``exp(ΣNLL / Σtokens)``, ``None`` without tokens), ``mean_words`` and ``empty`` (the
    generations with no word); ``None`` rates for no generations."""
    tokens = sum(m.tokens for m in measures)
    return {
        "repeat4": corpus_rate(m.repeat4 for m in measures),
        "distinct2": corpus_rate(m.distinct2 for m in measures),
        "fluency_ppl": math.exp(sum(m.nll for m in measures) / tokens) if tokens else None,
        "mean_words": sum(m.words for m in measures) / len(measures) if measures else None,
        "empty": sum(m.words == 0 for m in measures),
    }


def _generate(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[HarmPrompt],
    gen_tokens: int,
    batch_size: int,
    progress: bool | str,
) -> tuple[str, ...]:
    """Greedy continuations of ``prompts`` (per kind, with its stop strings), in order."""
    out = [""] * len(prompts)
    for kind in ("qa", "open"):
        rows = [i for i, p in enumerate(prompts) if p.kind == kind]
        if not rows:
            continue
        texts = generate_greedy(
            model,
            tokenizer,
            [prompts[i].text for i in rows],
            max_new_tokens=gen_tokens,
            stops=prompts[rows[0]].stops,
            batch_size=batch_size,
            progress=f"generate ({kind})" if progress else False,
        )
        for i, text in zip(rows, texts, strict=True):
            out[i] = text
    return tuple(out)


def _measure(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[HarmPrompt],
    generations: Sequence[str],
    batch_size: int,
) -> tuple[GenerationMeasures, ...]:
    """The measures of each generation; fluency scored by ``model`` as it is now (call it
    with no editor attached)."""
    scored = [
        i
        for i, (p, g) in enumerate(zip(prompts, generations, strict=True))
        if g and encode_pair(tokenizer, p.text, g)[1]
    ]
    requests = [ChoiceRequest(prompts[i].text, (generations[i],)) for i in scored]
    shared = QA_PRIMER if any(p.kind == "qa" for p in prompts) else None
    scores = score_requests(model, tokenizer, requests, shared_prefix=shared, batch_size=batch_size)
    fluency = {i: (-s[0].logprob, s[0].n_tokens) for i, s in zip(scored, scores, strict=True)}
    out = []
    for i, text in enumerate(generations):
        tokens = words(text)
        nll, n = fluency.get(i, (0.0, 0))
        out.append(
            GenerationMeasures(
                repeat4=repeated_ngram_rate(tokens, 4),
                distinct2=distinct_n(tokens, 2),
                words=len(tokens),
                nll=nll,
                tokens=n,
            )
        )
    return tuple(out)


@dataclass(frozen=True)
class HarmReference:
    """The unedited model's side of :func:`evaluate_harm`, computed once: the KL reference,
    the prompts, their unedited generations and measures (index-aligned), and the settings
    every evaluation against it reuses (``gen_tokens``, ``batch_size``)."""

    kl: KLReference
    prompts: tuple[HarmPrompt, ...]
    generations: tuple[str, ...]
    measures: tuple[GenerationMeasures, ...]
    gen_tokens: int
    batch_size: int
    seconds: Mapping[str, float]

    @property
    def summary(self) -> dict[str, Any]:
        """The unedited corpus measures (:func:`corpus_measures`)."""
        return corpus_measures(self.measures)


def build_harm_reference(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    *,
    texts: Sequence[str],
    prompts: Sequence[HarmPrompt | str] | None = None,
    max_tokens: int = 128,
    gen_tokens: int = 48,
    batch_size: int = 8,
    progress: bool | str = False,
) -> HarmReference:
    """The unedited model's KL reference on ``texts`` (each truncated to ``max_tokens``
    tokens) and its generations of ``prompts`` with their measures.

    ``prompts``: :class:`HarmPrompt` values or strings (open prompts); ``None`` =
    :data:`OPEN_PROMPTS` only (:func:`default_prompts` adds TruthfulQA questions). Run it
    with no editor attached.

    Raises:
        ValueError: no texts, no prompts, ``gen_tokens < 1``, or a text without tokens.
    """
    chosen = harm_prompts() if prompts is None else tuple(_as_prompt(p) for p in prompts)
    if not chosen:
        raise ValueError("build_harm_reference: no prompts")
    if gen_tokens < 1:
        raise ValueError(f"gen_tokens must be >= 1, got {gen_tokens}")
    started = time.perf_counter()
    kl = build_kl_reference(
        model, tokenizer, texts, max_tokens=max_tokens, batch_size=batch_size, progress=progress
    )
    kl_seconds = time.perf_counter() - started
    generations, measures, seconds = _generate_and_measure(
        model, tokenizer, None, chosen, gen_tokens, batch_size, progress
    )
    return HarmReference(
        kl=kl,
        prompts=chosen,
        generations=generations,
        measures=measures,
        gen_tokens=gen_tokens,
        batch_size=batch_size,
        seconds={"kl_seconds": kl_seconds, **seconds},
    )


def _generate_and_measure(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    editor: Any,
    prompts: Sequence[HarmPrompt],
    gen_tokens: int,
    batch_size: int,
    progress: bool | str,
) -> tuple[tuple[str, ...], tuple[GenerationMeasures, ...], dict[str, float]]:
    """Greedy generations of ``prompts`` under ``editor`` (``None``: the model as it is),
    their measures scored by the model outside the editor's hooks, and the seconds each
    part took (``generation_seconds``, ``fluency_seconds``)."""
    started = time.perf_counter()
    with contextlib.nullcontext() if editor is None else editor.apply(model):
        generations = _generate(model, tokenizer, prompts, gen_tokens, batch_size, progress)
    scored = time.perf_counter()
    measures = _measure(model, tokenizer, prompts, generations, batch_size)
    seconds = {
        "generation_seconds": scored - started,
        "fluency_seconds": time.perf_counter() - scored,
    }
    return generations, measures, seconds


def _as_prompt(prompt: HarmPrompt | str) -> HarmPrompt:
    return prompt if isinstance(prompt, HarmPrompt) else HarmPrompt(prompt, "open")


@dataclass(frozen=True)
class HarmResult:
    """An editor's harm against a :class:`HarmReference`: the KL, and the edited
    generations with their measures (index-aligned with ``reference.prompts``), and the
    seconds each measure took (``kl``, ``generation``, ``fluency``)."""

    reference: HarmReference
    kl: KLResult
    generations: tuple[str, ...]
    measures: tuple[GenerationMeasures, ...]
    seconds: Mapping[str, float]

    @property
    def summary(self) -> dict[str, Any]:
        """What ``summary.json`` holds: ``kl_mean``, ``kl_p95``, ``kl_max`` (nats per
        token), ``kl_tokens``; the edited ``repeat4``, ``distinct2`` (percent),
        ``fluency_ppl``, ``mean_words``, ``empty`` and the unedited model's under
        ``unedited_*``; ``changed`` (generations that differ from the unedited ones);
        ``n_texts``, ``n_prompts`` and ``by_kind`` (the generation measures per prompt
        kind); the settings; ``kl_seconds``, ``generation_seconds``, ``fluency_seconds``
        and the reference's under ``reference_seconds``."""
        ref = self.reference
        kl = self.kl.summary
        edited = corpus_measures(self.measures)
        unedited = corpus_measures(ref.measures)
        by_kind = {}
        for kind in ("qa", "open"):
            rows = [i for i, p in enumerate(ref.prompts) if p.kind == kind]
            if rows:
                mine = corpus_measures([self.measures[i] for i in rows])
                theirs = corpus_measures([ref.measures[i] for i in rows])
                by_kind[kind] = {
                    "n": len(rows),
                    **mine,
                    **{f"unedited_{k}": v for k, v in theirs.items()},
                }
        pairs = zip(self.generations, ref.generations, strict=True)
        return {
            "kl_mean": kl["kl_mean"],
            "kl_p95": kl["kl_p95"],
            "kl_max": kl["kl_max"],
            "kl_tokens": kl["tokens"],
            **edited,
            **{f"unedited_{k}": v for k, v in unedited.items()},
            "changed": sum(a != b for a, b in pairs),
            "n_texts": kl["texts"],
            "n_prompts": len(ref.prompts),
            "by_kind": by_kind,
            "max_tokens": ref.kl.max_tokens,
            "gen_tokens": ref.gen_tokens,
            **self.seconds,
            "reference_seconds": dict(ref.seconds),
        }

    @property
    def records(self) -> list[dict[str, Any]]:
        """One record per prompt: kind, prompt, unedited and edited text, both measures."""
        ref = self.reference
        return [
            {
                "kind": prompt.kind,
                "prompt": prompt.text,
                "unedited": before,
                "edited": after,
                "unedited_measures": m_before.record,
                "edited_measures": m_after.record,
            }
            for prompt, before, after, m_before, m_after in zip(
                ref.prompts,
                ref.generations,
                self.generations,
                ref.measures,
                self.measures,
                strict=True,
            )
        ]

    def report(self, shown: int = 3) -> str:
        """Markdown: the measures (unedited beside edited), then the first ``shown``
        generations of each prompt kind side by side."""
        s = self.summary
        rows = [
            ["KL mean (nats/token)", 0.0, s["kl_mean"]],
            ["KL p95 (nats/token)", 0.0, s["kl_p95"]],
            ["KL max (nats/token)", 0.0, s["kl_max"]],
            ["repeated 4-grams (%)", s["unedited_repeat4"], s["repeat4"]],
            ["distinct-2 (%)", s["unedited_distinct2"], s["distinct2"]],
            ["fluency perplexity", s["unedited_fluency_ppl"], s["fluency_ppl"]],
            ["mean words", s["unedited_mean_words"], s["mean_words"]],
            ["empty generations", s["unedited_empty"], s["empty"]],
        ]
        lines = [
            "# Harm on neutral text and free generation",
            "",
            f"{s['n_texts']} neutral texts ({s['kl_tokens']} tokens, at most "
            f"{s['max_tokens']} per text); {s['n_prompts']} prompts, at most "
            f"{s['gen_tokens']} new tokens; {s['changed']} generations changed by the edit.",
            "",
            _table(["measure", "unedited", "edited"], rows),
        ]
        ref = self.reference
        for kind in ("qa", "open"):
            rows_of_kind = [i for i, p in enumerate(ref.prompts) if p.kind == kind][:shown]
            if not rows_of_kind:
                continue
            lines += [f"## Generations ({kind} prompts)", ""]
            table = [
                [_cell(ref.prompts[i].shown), _cell(ref.generations[i]), _cell(self.generations[i])]
                for i in rows_of_kind
            ]
            lines.append(markdown_table(["prompt", "unedited", "edited"], table))
        return "\n".join(lines)

    def write(
        self, folder: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None
    ) -> Path:
        """Write ``folder/generations.jsonl`` (:attr:`records`), ``folder/report.md``, then
        ``folder/summary.json`` (:attr:`summary` plus ``metadata``), each atomically;
        returns the folder."""
        folder = Path(folder)
        write_jsonl(folder / "generations.jsonl", self.records)
        atomic_write_text(folder / "report.md", self.report())
        return write_summary(folder, self.summary, metadata)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table with floats to 4 significant digits."""
    cells = [[f"{c:.4g}" if isinstance(c, float) else fmt(c) for c in row] for row in rows]
    return markdown_table(headers, cells)


def _cell(text: str, limit: int = 400) -> str:
    """``text`` as one Markdown table cell: at most ``limit`` characters, ``|`` escaped,
    line breaks as ``<br>``."""
    text = text if len(text) <= limit else text[:limit] + " …"
    return text.replace("|", "\\|").replace("\n", "<br>") or "∅"


def evaluate_harm(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    editor: Any,
    reference: HarmReference,
    *,
    batch_size: int | None = None,
    progress: bool | str = False,
) -> HarmResult:
    """The harm of ``editor`` (anything with ``.apply(model)``; ``None`` = the model as
    it is) against ``reference``: the KL and the generations run under the editor, the
    fluency of the edited generations is scored by the unedited model (outside the
    editor's hooks). The unedited model's side is never recomputed.

    ``batch_size``: ``None`` = the reference's (the same batches, so that an editor that
    changes nothing reproduces the reference exactly: KL 0, the same generations).
    """
    size = reference.batch_size if batch_size is None else batch_size
    started = time.perf_counter()
    kl = measure_kl(model, reference.kl, editor, batch_size=size, progress=progress)
    kl_seconds = time.perf_counter() - started
    generations, measures, seconds = _generate_and_measure(
        model, tokenizer, editor, reference.prompts, reference.gen_tokens, size, progress
    )
    return HarmResult(
        reference=reference,
        kl=kl,
        generations=generations,
        measures=measures,
        seconds={"kl_seconds": kl_seconds, **seconds},
    )
