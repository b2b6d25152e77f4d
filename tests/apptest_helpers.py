"""Helpers shared by the AppTest suites: open a page with a preset selection, fail on page errors, read texts."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def ok(at: AppTest) -> AppTest:
    """Fail with the page's own message when it raised or showed an error."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def open_page(page: str, *, timeout: float, query: dict[str, str] | None = None, **selection) -> AppTest:
    """A fresh session on ``page`` with a preset selection (``sel_<key>``) or URL, after the router's first run."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    for key, value in (query or {}).items():
        at.query_params[key] = value
    for key, value in selection.items():
        at.session_state[f"sel_{key}"] = value
    at.run()
    if page != "home":
        at.switch_page(f"pages/{page}.py").run()
    return at


def texts(at: AppTest) -> str:
    """Every markdown, heading, caption, alert and code text of the page, one per line."""
    parts = [m.value for m in at.markdown] + [s.value for s in at.subheader] + [c.value for c in at.caption]
    parts += [w.value for w in at.warning] + [i.value for i in at.info] + [e.value for e in at.error]
    parts += [c.value for c in at.code]
    return "\n".join(str(p) for p in parts)
