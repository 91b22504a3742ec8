"""The chat format of Mistral 7B Instruct v0.1 (``mistral_common``'s "v1"): validate, lay out, show.

:func:`_chat_turns` checks a conversation and turns it into segments, each encoded separately by
:meth:`Tokenizer.encode_chat`; :func:`format_chat` shows the same layout as text, for display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ChatFormatError", "format_chat", "GUARDRAIL_SYSTEM_PROMPT"]

# The system prompt the Mistral 7B paper recommends for Mistral 7B - Instruct (section 5.1, "System prompt
# to enforce guardrails"), word for word. In v1 a system message is text glued to the first user turn.
GUARDRAIL_SYSTEM_PROMPT = ("Always assist with care, respect, and truth. Respond with utmost utility yet securely. "
                           "Avoid harmful, unethical, prejudiced, or negative content. Ensure replies promote "
                           "fairness and positivity.")


class ChatFormatError(ValueError):
    """A conversation that the v1 chat format cannot encode."""


_ROLES = ("system", "user", "assistant")


def _chat_turns(messages: Sequence[Mapping[str, Any]]) -> list[tuple[str, bool]]:
    """Validate a conversation and lay it out as ``(text, ends_with_eos)`` segments.

    The v1 layout, as in ``mistral_common`` (InstructRequestNormalizer + InstructTokenizerV1)::

        <s>[INST] {user} [/INST] {assistant}</s>[INST] {user} [/INST] ...

    * each segment is encoded *separately*, so each gets its own dummy-prefix '▁':
      the user segment is the text ``"[INST] " + content + " [/INST]"`` (pieces
      ``'▁['``, ``'INST'``, ``']'``, ...), the assistant segment is its content
      (hence the space shown before it), followed by the control id ``</s>``;
    * contents are used verbatim: no stripping of leading/trailing whitespace;
    * v1 has no system slot. All non-empty system messages, wherever they are, are
      joined with ``"\\n\\n"`` and put in front of the FIRST user message, again
      separated by ``"\\n\\n"``.

    Rules enforced (ChatFormatError names the message index and role): non-empty
    list; each message a mapping with a known ``role`` and a ``str`` ``content``;
    ignoring system messages, roles alternate user/assistant, starting and ending
    with user; assistant contents are non-empty and no system message directly
    follows an assistant message (mistral_common rejects both too).
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ChatFormatError(f"messages must be a list of dicts, got {type(messages).__name__}")
    if len(messages) == 0:
        raise ChatFormatError("messages is empty: a conversation needs at least one user message")
    system_parts: list[str] = []
    turns: list[tuple[int, str, str]] = []  # (index, role, content) of user/assistant messages
    for index, message in enumerate(messages):
        role, content = _checked_message(index, message)
        if role == "system":
            if index > 0 and messages[index - 1]["role"] == "assistant":
                raise ChatFormatError(
                    f"message {index} (role 'system') follows an assistant message; "
                    "system messages may only come first or after a user/system message"
                )
            if content:  # mistral_common drops empty system messages
                system_parts.append(content)
            continue
        expected = "user" if len(turns) % 2 == 0 else "assistant"
        if role != expected:
            raise ChatFormatError(
                f"message {index} has role {role!r} but {expected!r} was expected: "
                "after removing system messages, roles must alternate user/assistant/user/..., starting with user"
            )
        if role == "assistant" and not content:
            raise ChatFormatError(f"message {index} (role 'assistant'): content must not be empty")
        turns.append((index, role, content))
    if not turns:
        raise ChatFormatError("the conversation has no user message")
    last_index, last_role, _ = turns[-1]
    if last_role != "user":
        raise ChatFormatError(
            f"message {last_index} (role {last_role!r}) ends the conversation: the last message must be a user message"
        )
    return _segments(turns, system_parts)


def _checked_message(index: int, message: Any) -> tuple[str, str]:
    """(role, content) of one message, or ChatFormatError naming its index."""
    if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
        raise ChatFormatError(f"message {index} must be a dict with 'role' and 'content' keys, got {message!r:.200}")
    role, content = message["role"], message["content"]
    if role not in _ROLES:
        raise ChatFormatError(f"message {index}: unknown role {role!r:.80} (expected one of {', '.join(_ROLES)})")
    if not isinstance(content, str):
        raise ChatFormatError(f"message {index} (role {role!r}): content must be a str, got {type(content).__name__}")
    try:
        content.encode("utf-8")
    except UnicodeEncodeError as err:  # lone surrogates such as '\ud800'
        raise ChatFormatError(
            f"message {index} (role {role!r}): content is not valid Unicode (lone surrogate at position {err.start})"
        ) from None
    return role, content


def _segments(turns: list[tuple[int, str, str]], system_parts: list[str]) -> list[tuple[str, bool]]:
    """The (text, ends_with_eos) segments of validated turns; the system text joins the first user turn."""
    segments: list[tuple[str, bool]] = []
    for position, (_, role, content) in enumerate(turns):
        if role == "user":
            if position == 0 and system_parts:
                content = "\n\n".join(system_parts) + "\n\n" + content
            segments.append((f"[INST] {content} [/INST]", False))
        else:
            segments.append((content, True))
    return segments


def format_chat(messages: Sequence[Mapping[str, Any]]) -> str:
    """Render a conversation as the v1 prompt text, with ``<s>``/``</s>`` shown, for display.

    Do not encode this string: ``<s>`` and ``</s>`` are control ids, not text, and
    every segment must get its own dummy prefix. Use :meth:`Tokenizer.encode_chat`.
    """
    parts = ["<s>"]
    for text, eos in _chat_turns(messages):
        parts.append((" " if eos else "") + text + ("</s>" if eos else ""))
    return "".join(parts)
