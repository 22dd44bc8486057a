"""Which chat format a model gets.

A GGUF usually carries its Jinja chat template (`tokenizer.chat_template`); llama-cpp-python
then formats chats with it. Some files have none, and llama-cpp-python silently falls back to
the Llama-2 format, which a model of another family does not understand. `choose_chat_format`
never lets that happen: the configured format wins, then the file's own template, then a
format known for the architecture; otherwise `ChatTemplateMissing`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agents.models.errors import ChatTemplateMissing

EMBEDDED_TEMPLATE = "embedded"
"""What `choose_chat_format` returns when the file's own template applies."""

ARCHITECTURE_FORMATS: dict[str, str] = {
    "gemma": "gemma",
    "gemma2": "gemma",
    "gemma3": "gemma",
    "qwen2": "chatml",
    "qwen3": "chatml",
    "phi3": "chatml",
    "mistral": "mistral-instruct",
}
"""llama-cpp-python chat formats for files of these architectures that lack a template."""


def choose_chat_format(
    *, architecture: str, chat_template: str | None, configured: str | None = None, path: str = ""
) -> str:
    """`configured`, else `EMBEDDED_TEMPLATE`, else the architecture's format.

    Raises `ChatTemplateMissing` when none applies, naming the setting to use.
    """
    if configured:
        return configured
    if chat_template and chat_template.strip():
        return EMBEDDED_TEMPLATE
    known = ARCHITECTURE_FORMATS.get(architecture)
    if known is not None:
        return known
    raise ChatTemplateMissing(path, architecture)


SYSTEMLESS_FORMATS = frozenset({"gemma"})
"""Formats whose llama-cpp-python formatter drops `system` messages without a word."""


def fold_system_messages(
    messages: Sequence[Mapping[str, str]], chat_format: str | None
) -> list[dict[str, str]]:
    """`messages`, with system messages moved into the first user turn for the formats that
    have no system role (as Gemma's own template does), so that nothing is dropped."""
    copied = [dict(message) for message in messages]
    if chat_format not in SYSTEMLESS_FORMATS:
        return copied
    system = [m["content"] for m in copied if m.get("role") == "system"]
    rest = [m for m in copied if m.get("role") != "system"]
    if not system:
        return rest
    preface = "\n\n".join(system)
    for message in rest:
        if message.get("role") == "user":
            message["content"] = f"{preface}\n\n{message['content']}"
            return rest
    return [{"role": "user", "content": preface}, *rest]


def llama_chat_format_argument(chosen: str) -> str | None:
    """The `chat_format` argument for `llama_cpp.Llama` (None = use the file's template)."""
    return None if chosen == EMBEDDED_TEMPLATE else chosen
