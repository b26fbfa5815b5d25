"""Hydra's override quoting: a value written so that Hydra's parser reads it back exactly.

Run folders record the command that resumes them, and error messages say how to type a path
with non-ASCII letters, ``=`` or ``,``; both quote values here (the commands' override checks
are :mod:`bloodseg.cli.errors`).
"""

from __future__ import annotations

import re
import shlex


def quote_value(value: str) -> str:
    """``value`` as a Hydra quoted string that parses back to exactly ``value``."""
    q = "'" if '"' in value and "'" not in value else '"'
    # inside quotes Hydra unescapes only backslashes that precede a quote (or the end)
    body = re.sub(r"(\\*)(" + re.escape(q) + r"|$)",
                  lambda m: m.group(1) * 2 + ("\\" + m.group(2) if m.group(2) else ""), value)
    return f"{q}{body}{q}"


def quoting_hint(override: str) -> str:
    """The override as the user should type it in a POSIX shell, value quoted for Hydra."""
    key, sep, value = override.partition("=")
    if not sep:
        return shlex.quote(override)
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]  # already quoted, but the shell ate the quotes or they are unbalanced
    return shlex.quote(f"{key}={quote_value(value)}")
