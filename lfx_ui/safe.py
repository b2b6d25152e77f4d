"""Text from users (links, file names, file contents) shown without ever being read as Markdown.

Streamlit renders the text of ``st.warning``, ``st.error``, captions and headings as
Markdown, so a crafted link or file name could show attacker-chosen links, images
(fetched by the victim's browser) or a second shell command. Every user-controlled
string passes through :func:`shown` first: only letters, digits, space, ``_``, ``.``
and ``-`` survive (escaped), the rest becomes ``?``, and long values are cut.
"""
from __future__ import annotations

import re

_KEEP = re.compile(r"[^A-Za-z0-9 _.\-]")
_ESCAPE = re.compile(r"([_.\-])")
#: What a name in a link may look like (model, dataset): anything else is refused before it reaches a message.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


def shown(text: object, limit: int = 60) -> str:
    """``text`` as inert Markdown: safe characters only, escaped, at most ``limit`` characters."""
    value = str(text)
    cut = value[:limit]
    cleaned = _ESCAPE.sub(r"\\\1", _KEEP.sub("?", cut))
    return cleaned + ("…" if len(value) > limit else "")


def is_name(text: object) -> bool:
    """Whether ``text`` is a plain name (letters, digits, ``_``, ``.``, ``-``; at most 100 characters)."""
    return isinstance(text, str) and bool(NAME.match(text))


def describe(text: object) -> str:
    """A name as inert Markdown when it is a plain name, else only its length ("an unknown value (N characters)")."""
    return f"**{shown(text)}**" if is_name(text) else f"an unknown value ({len(str(text))} characters)"
