"""Items as people read them: what the viewer shows of each stored SDK item.

An item is one of the Agents SDK's plain JSON dicts (the Responses API's input items):
messages with text, images and files; tool calls and their outputs; reasoning; the
hosted tools' calls. :func:`view_item` turns one into an :class:`ItemView` of typed
parts that the templates render; anything it does not know is shown by its type and
fields, and every item keeps its exact JSON for "raw JSON" on demand.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import msgspec

PartKind = Literal["text", "image", "link", "code", "file", "refusal", "note"]

# Images are shown only from data: URLs (the item itself): the viewer never fetches a
# remote address (a page that loads one tells its owner the conversation is being read).
_IMAGE_PREFIX = "data:image/"
_MAX_TEXT = 100_000  # characters of one part shown; the raw JSON has the rest


class Part(msgspec.Struct, frozen=True):
    """One piece of an item: ``kind`` says how to show ``text`` (a URL for an image
    or a link, source code for code)."""

    kind: PartKind
    text: str
    label: str = ""


class ItemView(msgspec.Struct, frozen=True):
    """One item, ready to show. ``kind``: message, tool_call, tool_output, reasoning,
    locked (encrypted, no key), or the item's own type; ``who``: the role or the
    tool's name; ``call_id`` ties a tool call to its output; ``raw``: the item's JSON."""

    kind: str
    who: str
    parts: tuple[Part, ...]
    raw: str
    call_id: str | None = None
    seq: int | None = None
    version: int | None = None


def _clip(text: str) -> str:
    if len(text) <= _MAX_TEXT:
        return text
    return text[:_MAX_TEXT] + f"\n… ({len(text) - _MAX_TEXT:,} more characters in the raw JSON)"


def _pretty_json(text: Any) -> str:
    """Tool arguments (a JSON string) indented, or as they are if not JSON."""
    if not isinstance(text, str):
        return _clip(json.dumps(text, indent=2, ensure_ascii=False))
    try:
        return _clip(json.dumps(json.loads(text), indent=2, ensure_ascii=False))
    except ValueError:
        return _clip(text)


def _image(url: Any, label: str = "image") -> Part:
    if isinstance(url, str) and url.startswith(_IMAGE_PREFIX):
        return Part("image", url, label)
    if isinstance(url, str) and url:
        return Part("link", url, f"{label} (not loaded: a remote address)")
    return Part("note", f"{label} (no data)")


def content_parts(content: Any) -> list[Part]:
    """The parts of a message's ``content`` (a string, or a list of typed parts)."""
    if isinstance(content, str):
        return [Part("text", _clip(content))]
    if not isinstance(content, list):
        return [Part("code", _pretty_json(content))] if content is not None else []
    parts: list[Part] = []
    for piece in content:
        if not isinstance(piece, dict):
            parts.append(Part("code", _pretty_json(piece)))
            continue
        kind = piece.get("type")
        if kind in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
            parts.append(Part("text", _clip(str(piece.get("text", "")))))
        elif kind == "refusal":
            parts.append(Part("refusal", _clip(str(piece.get("refusal", "")))))
        elif kind in ("input_image", "image"):
            parts.append(_image(piece.get("image_url") or piece.get("url"), "image"))
        elif kind == "input_file":
            name = piece.get("filename") or piece.get("file_id") or "file"
            parts.append(Part("file", str(name)))
        elif kind == "input_audio":
            parts.append(Part("note", "audio input"))
        else:
            parts.append(Part("code", _pretty_json(piece), str(kind or "part")))
    return parts


def _output_parts(output: Any) -> list[Part]:
    if isinstance(output, str):
        return [Part("code" if output.lstrip().startswith(("{", "[")) else "text", _clip(output))]
    return content_parts(output)


def view_item(item: Any, *, seq: int | None = None, version: int | None = None) -> ItemView:
    """How to show ``item`` (a decoded SDK item)."""
    raw = _clip(json.dumps(item, indent=2, ensure_ascii=False))
    if not isinstance(item, dict):
        return ItemView("value", "", (Part("code", raw),), raw, seq=seq, version=version)
    kind = item.get("type")
    role = item.get("role")
    call_id = item.get("call_id")
    parts: list[Part]
    if role is not None and kind in (None, "message"):
        kind, who, parts = "message", str(role), content_parts(item.get("content"))
    elif kind in ("function_call", "custom_tool_call"):
        args = item.get("arguments", item.get("input", ""))
        who = str(item.get("name", "tool"))
        kind, parts = "tool_call", [Part("code", _pretty_json(args), "arguments")]
    elif kind in ("function_call_output", "custom_tool_call_output", "computer_call_output"):
        kind, who, parts = "tool_output", "output", _output_parts(item.get("output"))
    elif kind == "reasoning":
        summary = content_parts(item.get("summary") or [])
        body = content_parts(item.get("content") or [])
        if not summary and not body and item.get("encrypted_content"):
            summary = [Part("note", "reasoning kept encrypted by the model provider")]
        who, parts = "reasoning", summary + body
    elif kind == "image_generation_call":
        result = item.get("result")
        who = "image generation"
        parts = [_image(f"data:image/png;base64,{result}", "generated image")] if result else []
    elif kind in ("web_search_call", "file_search_call", "code_interpreter_call", "mcp_call"):
        who = str(kind).replace("_call", "").replace("_", " ")
        detail = {k: v for k, v in item.items() if k not in ("type", "id", "status")}
        parts = [Part("code", _pretty_json(detail))]
        kind = "tool_call"
    else:
        who = str(kind or "item")
        detail = {k: v for k, v in item.items() if k != "type"}
        parts = [Part("code", _pretty_json(detail))]
        kind = "other"
    return ItemView(
        str(kind),
        who,
        tuple(parts),
        raw,
        call_id=call_id if isinstance(call_id, str) else None,
        seq=seq,
        version=version,
    )


def locked_item(envelope: Any, reason: str, *, seq: int | None, version: int | None) -> ItemView:
    """An encrypted item shown without its content: who (a user message is marked as
    such in the envelope), when it was sealed, and why it stays locked."""
    who = "user" if isinstance(envelope, dict) and envelope.get("role") == "user" else "sealed"
    raw = json.dumps(envelope, indent=2, ensure_ascii=False)
    return ItemView("locked", who, (Part("note", reason),), raw, seq=seq, version=version)
