"""Run text made inert in Markdown: what a run folder says is shown, never rendered.

Names, config values and errors in a run folder are whatever its ``meta.json`` holds, and
the report pastes them into the README: a ``<script>``, an ``<img onerror=...>``, a
``[link](javascript:...)`` or a newline followed by ``<!-- demo:end -->`` must come out as
text and stay on its line. Every run string on its way into Markdown goes through
:func:`text` (table cells, headings, captions, alt text) or :func:`code` (in backticks).
"""

from __future__ import annotations

import html
import re
from typing import Any

# Markdown that can start mid-line: escapes, code, emphasis, links and images, tables,
# strikethrough, GitHub math, headings (a lone "_" between letters is no emphasis in GFM)
_PUNCTUATION = re.compile(r"([\\`*\[\]|~$#!])")
_LOOSE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(value: Any) -> str:
    """``value`` as one line: every run of white space (newlines too) becomes one space."""
    return _CONTROL.sub("", " ".join(str(value).split()))


def text(value: Any) -> str:
    """``value`` as literal Markdown text on one line: Markdown punctuation backslash-escaped,
    ``& < >`` as entities (so no tag, comment, entity or autolink can form)."""
    escaped = _LOOSE_UNDERSCORE.sub(r"\\_", _PUNCTUATION.sub(r"\\\1", one_line(value)))
    return html.escape(escaped, quote=False)


def code(value: Any) -> str:
    """``value`` as an inline code span on one line (GitHub shows HTML in it as text)."""
    return "`" + one_line(value).replace("`", "'") + "`"
