"""Selections that persist across pages and live in the URL.

The chosen dataset, model, feature-attribution methods (``methods``),
example-importance methods (``xmethods``), test sample (an index into the
model's test split) and gallery class filter (``cls``) are kept in non-widget session
state keys (widget state is per page and is lost when a widget disappears).
On a session's first run the URL's query parameters seed them, so a shared
link reopens the same view; after every run the URL is rewritten from them.
"""
from __future__ import annotations

import builtins
from typing import Any, Callable, Sequence

import streamlit as st

from lfx_ui import safe


def known_methods() -> frozenset[str]:
    """Every method and control name of the engine (imported here, not at start-up: the engine is heavy)."""
    from lfx_engine.explorer import EXAMPLE_METHODS, FEATURE_METHODS
    from lfx_engine.metrics.masking_controls import CONTROLS

    return frozenset((*FEATURE_METHODS, *EXAMPLE_METHODS, *CONTROLS))


FIELDS = ("dataset", "model", "methods", "xmethods", "controls", "sample", "cls")
_LIST_FIELDS = {"methods", "xmethods", "controls"}
_INT_FIELDS = {"sample"}
_LOADED_FLAG = "_lfx_url_loaded"
_FROM_LINK = "_lfx_from_link"
#: Longest query value read at all (a link cannot smuggle megabytes into the session).
MAX_VALUE = 500


def _key(field: str) -> str:
    return f"sel_{field}"


def load_from_url() -> None:
    """Copy query parameters into session state once per session."""
    if st.session_state.get(_LOADED_FLAG):
        return
    st.session_state[_LOADED_FLAG] = True
    params = st.query_params
    linked: builtins.set[str] = builtins.set()
    problems: list[str] = []
    for field in FIELDS:
        raw = params.get(field)
        if raw is None or raw == "":
            continue
        if len(raw) > MAX_VALUE:
            problems.append(f"Ignored the link's {field}: {len(raw)} characters is not a valid value.")
            continue
        if field in _LIST_FIELDS:
            values = [v for v in raw.split(",") if v]
            names = [v for v in values if safe.is_name(v)]
            if len(names) < len(values):
                problems.append(f"Ignored {len(values) - len(names)} value(s) of the link's {field} that are not "
                                "method names.")
            st.session_state[_key(field)] = names
        elif field in _INT_FIELDS:
            try:
                value = int(raw)
            except ValueError:
                problems.append(f"Ignored the link's {field} ({len(raw)} characters): not a number.")
                continue
            st.session_state[_key(field)] = value
        elif field == "cls" or safe.is_name(raw):
            st.session_state[_key(field)] = raw
        else:
            problems.append(f"Ignored the link's {field}: {safe.describe(raw)} is not a name.")
            continue
        linked.add(field)
    st.session_state[_FROM_LINK] = linked
    if problems:
        st.session_state["_lfx_url_error"] = " ".join(problems)


def from_link(field: str) -> bool:
    """Whether the current value of ``field`` came from the link (not yet replaced by a choice in the app)."""
    return field in st.session_state.get(_FROM_LINK, ())


def _consume_link(field: str) -> None:
    linked = st.session_state.get(_FROM_LINK)
    if linked:
        linked.discard(field)


def user_set(field: str, value: Any) -> None:
    """A selection the user made in a widget: the link no longer speaks for any field.

    Changing the dataset, say, leaves the link's model behind on purpose; warning that "the link asked for" it
    would blame a link the user has already moved away from.
    """
    st.session_state[_FROM_LINK] = builtins.set()
    set(field, value)


def get(field: str, default: Any = None) -> Any:
    """The current selection for ``field``."""
    return st.session_state.get(_key(field), default)


def set(field: str, value: Any) -> None:  # noqa: A001 - mirrors dict-style naming
    """Change the selection for ``field`` (and the URL at the end of the run)."""
    if st.session_state.get(_key(field)) != value:
        _consume_link(field)
    st.session_state[_key(field)] = value


def write_to_url() -> None:
    """Mirror the selections into the URL so the view can be shared."""
    for field in FIELDS:
        value = get(field)
        if value is None or value == [] or value == "":
            if field in st.query_params:
                del st.query_params[field]
            continue
        text = ",".join(value) if field in _LIST_FIELDS else str(value)
        if st.query_params.get(field) != text:
            st.query_params[field] = text


def choose(field: str, label: str, options: Sequence[Any], *, widget_key: str,
           format_func=str, help: str | None = None, container=None) -> Any:
    """A selectbox bound to a persistent selection; falls back to the first option."""
    options = list(options)
    if not options:
        return None
    current = get(field)
    if current is not None and current not in options and from_link(field) and field == "cls":
        st.warning(f"The link's class {safe.describe(current)} is not a class of this dataset; showing "
                   f"{format_func(options[0])}.")
    index = options.index(current) if current in options else 0
    target = container or st

    def _sync() -> None:
        user_set(field, st.session_state[widget_key])

    value = target.selectbox(label, options, index=index, key=widget_key,
                             format_func=format_func, on_change=_sync, help=help)
    set(field, value)
    return value


def choose_many(field: str, label: str, options: Sequence[str], *, widget_key: str,
                default: Sequence[str], format_func=str, container=None) -> list[str]:
    """A multiselect bound to a persistent list selection."""
    options = list(options)
    chosen = list(get(field) or [])
    unknown = [m for m in chosen if m not in options and m not in known_methods()]
    if unknown and from_link(field):
        st.warning(f"The link named {len(unknown)} unknown method(s) ({', '.join(safe.shown(m, 30) for m in unknown[:3])}"
                   f"{', …' if len(unknown) > 3 else ''}); they were left out.")
        _consume_link(field)
    current = [m for m in chosen if m in options] or [m for m in default if m in options]
    target = container or st

    def _sync() -> None:
        user_set(field, list(st.session_state[widget_key]))

    value = target.multiselect(label, options, default=current, key=widget_key,
                               format_func=format_func, on_change=_sync)
    set(field, list(value))
    return list(value)


def requested(field: str, options: Sequence[Any]) -> Any:
    """The stored selection when it is *not* among ``options`` (e.g. a link to a model not trained here)."""
    value = get(field)
    if value is None or value == "" or value in list(options):
        return None
    return value


_LINK_FORMATS = "_lfx_link_formats"


def bind(key: str, format_func: Callable[[Any], object] | None = None) -> dict[str, Any]:
    """Widget keyword arguments that keep the widget's value in the link (Streamlit's ``bind="query-params"``).

    The key is the link's parameter name. ``format_func`` (given to the widget too) is how the link spells a
    value: Streamlit writes an option's label, so :func:`linked_settings` (the report's deep link) does too.
    """
    st.session_state.setdefault(_LINK_FORMATS, {})[key] = format_func
    kwargs: dict[str, Any] = {"key": key, "bind": "query-params"}
    if format_func is not None:
        kwargs["format_func"] = format_func
    return kwargs


def link_text(value: Any, format_func: Callable[[Any], object] | None = None) -> str:
    """A bound widget's value as its link parameter: the option's label, a number, true/false."""
    if format_func is not None:
        return str(format_func(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def linked_settings() -> dict[str, str]:
    """Every bound widget of the current view with its value, as the link spells it."""
    out: dict[str, str] = {}
    for key, fmt in st.session_state.get(_LINK_FORMATS, {}).items():
        if key in st.session_state and (st.session_state[key] is not None or fmt is not None):
            try:
                out[key] = link_text(st.session_state[key], fmt)
            except Exception:  # noqa: BLE001 - a formatter of another page's options
                continue
    return out


def forget_bindings() -> None:
    """Start a page run with no bound widget registered (the page registers its own)."""
    st.session_state[_LINK_FORMATS] = {}


def url_error() -> str | None:
    """A message about an unusable URL parameter, shown once."""
    return st.session_state.pop("_lfx_url_error", None)
