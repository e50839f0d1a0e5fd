"""Prompts and answer continuations, written once for demonstrations and evaluation alike.

A :class:`PromptFormat` says how a question becomes a prompt and an answer its
continuation; every builder and benchmark takes one (default :data:`PLAIN`), so a
demonstration and an evaluation of the same question see the same prompt.

- :data:`PLAIN` (lm-evaluation-harness style): the prompt is plain text (for QA the
  primer, a blank line, ``Q: ...\\nA:``) and the continuation is :func:`answer_text`
  (one space, then the stripped answer).
- A chat format (:func:`chat_format`): the prompt is the tokenizer's chat template
  applied to one user turn (after an optional system turn), with the generation prompt;
  the continuation is the stripped answer, following the generation prompt directly (as
  lm-evaluation-harness does under ``--apply_chat_template``). No few-shot primer: the
  user turn is the question alone (chat models are prompted zero-shot through their
  template).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedTokenizerBase

from ..data.bbq import BBQItem
from ..data.truthfulqa import QA_PRIMER

BBQ_PROMPT_FORMAT = "{context}\nQ: {question}\nA:"
"""The plain BBQ prompt; ``context`` and ``question`` are stripped of surrounding
whitespace. Under a chat template the user turn is ``{context}\\n{question}``."""

NO_TEMPLATE = "none"
"""What an editor's metadata records as ``chat_template`` when it was fitted on plain
prompts."""

_SENTINEL = "\x00spectral-edit-user-turn\x00"
"""A user turn no real text contains: where a template puts it splits the rendering into
the text before and after the user's content."""


class ChatTemplateError(ValueError):
    """A chat template was asked for but cannot be used: the tokenizer has none, or it
    refuses the turns (e.g. a system prompt where its template allows no system role).
    The message names ``--chat-template`` / ``--system-prompt`` and the model."""


@dataclass(frozen=True)
class ChatTemplate:
    """A tokenizer's chat template and an optional system prompt.

    Invariant: :meth:`render` of ``content`` is exactly
    ``tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)``
    with ``messages`` = the system turn (if any), then ``{"role": "user", "content":
    content}``. Two templates are equal when their source and system prompt are.
    """

    source: str
    system_prompt: str | None
    tokenizer: PreTrainedTokenizerBase = field(compare=False, repr=False)

    @property
    def sha256(self) -> str:
        """The sha256 of the template's source: what an editor records of it."""
        return hashlib.sha256(self.source.encode("utf-8")).hexdigest()

    def messages(self, content: str) -> list[dict[str, str]]:
        """The turns rendered for a user turn of ``content``."""
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*system, {"role": "user", "content": content}]

    def render(self, content: str) -> str:
        """The prompt of a user turn ``content``: the template with the generation prompt."""
        text = self.tokenizer.apply_chat_template(
            self.messages(content),
            chat_template=self.source,
            tokenize=False,
            add_generation_prompt=True,
        )
        assert isinstance(text, str)  # tokenize=False renders one conversation to text
        return text

    def around(self) -> tuple[str, str] | None:
        """``(before, after)``: the rendering of any user turn is ``before + content +
        after`` for content the template inserts verbatim; ``None`` if it does not show
        a user turn verbatim once."""
        before, *rest = self.render(_SENTINEL).split(_SENTINEL)
        return (before, rest[0]) if len(rest) == 1 else None

    def is_rendered(self, prompt: str) -> bool:
        """Whether ``prompt`` already is a rendering of this template (it starts with the
        text before the user turn and ends with the generation prompt)."""
        parts = self.around()
        return parts is not None and prompt.startswith(parts[0]) and prompt.endswith(parts[1])


@dataclass(frozen=True)
class PromptFormat:
    """How prompts are built: plain text (``chat is None``, :data:`PLAIN`) or through a
    chat template. Frozen; passed as one value from the command line down to every
    builder, capture and benchmark."""

    chat: ChatTemplate | None = None

    @property
    def is_chat(self) -> bool:
        """Whether prompts go through a chat template."""
        return self.chat is not None

    def prompt(self, plain: str, user: str) -> str:
        """The ``plain`` prompt, or under a template the user turn ``user`` rendered."""
        return plain if self.chat is None else self.chat.render(user)

    def answer(self, answer: str) -> str:
        """The continuation of ``answer``: :func:`answer_text` for plain prompts; the
        stripped answer under a template (it follows the generation prompt directly)."""
        return answer_text(answer) if self.chat is None else answer.strip()

    def continuation(self, text: str) -> str:
        """A plain-format continuation (one leading space, as the control-task loaders
        write them) in this format: unchanged, or without that space under a template."""
        if self.chat is None or not text.startswith(" "):
            return text
        return text[1:]

    def shared_prefix(self, plain: str | None) -> str | None:
        """The text most prompts start with, for the scorer's shared cache: ``plain`` for
        plain prompts; under a template the text before the user turn (or ``None``)."""
        if self.chat is None:
            return plain
        parts = self.chat.around()
        return parts[0] if parts and parts[0] else None

    def adopt(self, prompt: str) -> str:
        """A demonstration's prompt in this format: as written for plain prompts, and
        under a template as written if it already is a rendering of the template (built
        by ``sea demos --chat-template``), else the user turn ``prompt`` rendered."""
        if self.chat is None or self.chat.is_rendered(prompt):
            return prompt
        return self.chat.render(prompt)

    def record(self) -> dict[str, Any]:
        """What an editor's metadata (and a report) records of the format:
        ``chat_template`` (the template's sha256, or :data:`NO_TEMPLATE`) and
        ``system_prompt`` (``None`` without one)."""
        if self.chat is None:
            return {"chat_template": NO_TEMPLATE, "system_prompt": None}
        return {"chat_template": self.chat.sha256, "system_prompt": self.chat.system_prompt}

    def key(self) -> dict[str, Any]:
        """What a stored result's content key adds for this format: nothing for plain
        prompts (so results stored before chat templates existed stay valid), else
        ``{"prompts": record()}``."""
        return {} if self.chat is None else {"prompts": self.record()}


PLAIN = PromptFormat()
"""Plain-text prompts (no chat template): the default everywhere."""


def describe_prompts(record: Mapping[str, Any]) -> str:
    """A :meth:`PromptFormat.record` in words, for reports: ``"plain prompts"``, or the
    chat template by the start of its sha256 (and the system prompt, if any)."""
    template = record.get("chat_template", NO_TEMPLATE)
    if template in (None, NO_TEMPLATE):
        return "plain prompts"
    system = record.get("system_prompt")
    text = f"the tokenizer's chat template (sha256 {str(template)[:12]}…)"
    return text + (f", system prompt {system!r}" if system else "")


def chat_format(
    tokenizer: PreTrainedTokenizerBase, system_prompt: str | None = None, model: str = "the model"
) -> PromptFormat:
    """The chat format of ``tokenizer``'s own template, with ``system_prompt``.

    Raises:
        ChatTemplateError: the tokenizer has no chat template (naming ``--chat-template``
            and ``model``), or its template refuses the system prompt.
    """
    source = getattr(tokenizer, "chat_template", None)
    if isinstance(source, dict):  # several named templates: the default one
        source = source.get("default")
    if not isinstance(source, str) or not source.strip():
        raise ChatTemplateError(
            f"--chat-template: the tokenizer of {model} has no chat template (base models "
            "usually have none); use a chat/instruct model, or leave out --chat-template"
        )
    template = ChatTemplate(source, system_prompt or None, tokenizer)
    try:
        template.render("?")
    except Exception as error:  # noqa: BLE001 - jinja raises its own errors, any kind
        option = "--system-prompt" if system_prompt else "--chat-template"
        raise ChatTemplateError(
            f"{option}: the chat template of {model} refuses the turns ({error})"
        ) from None
    return PromptFormat(template)


def answer_text(answer: str) -> str:
    """The plain continuation appended to a prompt: one space, then the stripped answer."""
    return " " + answer.strip()


def qa_prompt(question: str, prompt_format: PromptFormat = PLAIN) -> str:
    """The TruthfulQA-style prompt for a question: primer, blank line, ``Q: ...\\nA:``
    (under a chat template: the stripped question as the user turn, no primer).

    The question is stripped: on TruthfulQA's ``mc_task_v0.json`` no question has
    surrounding whitespace, so the plain prompt is lm-evaluation-harness's
    ``truthfulqa_mc`` prompt byte for byte; HaluEval questions sometimes have it, and a
    demonstration built from one must see the same prompt as an evaluation of the same
    question.
    """
    question = question.strip()
    return prompt_format.prompt(f"{QA_PRIMER}\n\nQ: {question}\nA:", question)


def bbq_prompt(item: BBQItem, prompt_format: PromptFormat = PLAIN) -> str:
    """The prompt of one item (:data:`BBQ_PROMPT_FORMAT`)."""
    context, question = item.context.strip(), item.question.strip()
    plain = BBQ_PROMPT_FORMAT.format(context=context, question=question)
    return prompt_format.prompt(plain, f"{context}\n{question}")


def bbq_continuations(item: BBQItem, prompt_format: PromptFormat = PLAIN) -> tuple[str, str, str]:
    """The three scored continuations, :meth:`PromptFormat.answer` of each option, in
    ``ans0..ans2`` order."""
    a, b, c = (prompt_format.answer(answer) for answer in item.answers)
    return a, b, c
