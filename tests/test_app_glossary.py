"""The Glossary page and the help texts it backs, the model selector's grouping and Home's tables.

Unit tests of :mod:`lfx_ui.glossary`, :mod:`lfx_ui.tables` and the selector's
grouping helpers, then AppTests against the app tests' tiny real zoo
(``tests/browser/tiny_zoo.py``; skipped without the real datasets).
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit.testing.v1")
from google.protobuf import text_format  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

import apptest_helpers  # noqa: E402
from apptest_helpers import ok, texts  # noqa: E402
from lfx_engine.explorer import EXAMPLE_METHODS, FEATURE_METHODS, METHOD_TITLES, ModelChoice  # noqa: E402
from lfx_engine.metrics.masking_controls import CONTROLS  # noqa: E402
from lfx_ui import glossary  # noqa: E402
from lfx_ui.engine import by_experiment, grouped_label, selector_labels  # noqa: E402
from lfx_ui.tables import MISSING, fill_missing  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 120
#: Terms the Glossary page must explain (the brief's list).
KEY_TERMS = ("DKNN", "SimplEx", "TracIn", "LiSSA", "Gauss–Newton", "pretext", "noise ceiling", "β-TC-VAE",
             "random re-initialised encoder")


# ---------------------------------------------------------------------------- glossary data


def test_every_offered_method_and_control_has_an_entry() -> None:
    """Each attribution / example method and masking control the app offers is defined in the glossary."""
    names = {n.casefold() for n in glossary.GLOSSARY}
    methods = [m for m in (*FEATURE_METHODS, *EXAMPLE_METHODS) if m in METHOD_TITLES]
    titles = {METHOD_TITLES[m].replace(" NN", " similarity").casefold() for m in methods}
    assert titles <= names, titles - names
    controls = {"random": "random (control)", "random_informative": "random among informative features",
                "model_free": "model-free |x − baseline| ranking", "random_init": "random re-initialised encoder"}
    assert set(controls) == set(CONTROLS) and set(controls.values()) <= names


def test_entries_are_complete_and_sections_known() -> None:
    for name, term in glossary.GLOSSARY.items():
        assert term.section in glossary.SECTIONS, name
        assert len(term.definition) > 30 and term.where, name
        assert "METHOD" not in term.definition + term.where, name


def test_define_escapes_markdown_and_refuses_unknown_terms() -> None:
    assert "g\\_x" in glossary.define("Label-free feature importance")
    with pytest.raises(KeyError):
        glossary.define("no such term")


def test_search_matches_term_definition_and_where() -> None:
    assert set(glossary.search("")) == set(glossary.GLOSSARY)
    assert "LiSSA damping" in glossary.search("lissa")  # the term, any case
    assert "Influence Functions" in glossary.search("Koh & Liang")  # the definition
    assert "Noise ceiling" in glossary.search("noise ceiling") and not glossary.search("zzz-nothing")


def _defined_terms(path: Path) -> list[str]:
    """The literal terms a source file passes to ``glossary.define``."""
    calls = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute) and n.func.attr == "define"]
    assert all(isinstance(c.args[0], ast.Constant) for c in calls), f"{path}: define() takes a literal term"
    return [c.args[0].value for c in calls]


def test_every_term_a_page_cites_exists() -> None:
    used = {str(p.relative_to(REPO)): _defined_terms(p)
            for p in [*REPO.glob("pages/*.py"), *REPO.glob("lfx_ui/*.py")]}
    cited = {t for terms in used.values() for t in terms}
    assert cited - set(glossary.GLOSSARY) == set()
    # the help texts that used to cite the developer document now come from the glossary
    assert {"LiSSA damping", "LiSSA scale", "LiSSA recursion depth", "Gauss–Newton Hessian",
            "Training subset"} <= set(used["pages/examples.py"])
    assert "Render steps" in used["pages/lucent.py"]


# ---------------------------------------------------------------------------- tables and selector helpers


def test_fill_missing_shows_a_dash_and_keeps_full_columns() -> None:
    frame = pd.DataFrame({"loss": [0.123456, np.nan], "acc": [None, 0.9], "n": [1, 2], "note": ["a", None]})
    shown = fill_missing(frame)
    assert shown["loss"].tolist() == ["0.1235", MISSING]
    assert shown["acc"].tolist() == [MISSING, "0.9"] and shown["note"].tolist() == ["a", MISSING]
    assert shown["n"].dtype == frame["n"].dtype  # no gap: still numeric
    assert not shown.isna().any().any()


def _model(name: str, experiment: str, task: str = "denoising", source: str = "zoo") -> ModelChoice:
    return ModelChoice(name=name, dataset="mnist", experiment=experiment, task=task, beta=None, run=1,
                       latent_dim=4, record={}, source=source)


def test_models_are_grouped_by_experiment_with_the_first_kept() -> None:
    models = [_model("a", "disvae"), _model("b", "pretext"), _model("c", "disvae"),
              _model("d", "consistency"), _model("e", "", source="project")]
    grouped = by_experiment(models)
    assert [m.name for m in grouped] == ["a", "c", "b", "d", "e"]
    labels = selector_labels(grouped)
    assert labels["b"] == "Pretext › denoising AE (run 1)"  # the experiment is not repeated
    assert labels["e"].startswith("Your models › ")
    twins = selector_labels([_model("x", "pretext"), _model("y", "pretext")])
    assert twins == {"x": "Pretext › denoising AE (run 1) · x", "y": "Pretext › denoising AE (run 1) · y"}
    assert grouped_label(_model("z", "consistency")) == "Consistency › denoising AE (run 1)"


# ---------------------------------------------------------------------------- the app (tiny real zoo)


@pytest.fixture
def app_env(tiny_app_env) -> dict[str, str]:
    return tiny_app_env


def open_page(page: str, query: dict[str, str] | None = None, **selection) -> AppTest:
    return apptest_helpers.open_page(page, timeout=TIMEOUT, query=query, **selection)


def shown_text(at: AppTest) -> str:
    """Every string of every element and block of the page (labels, help, captions, options, …) as UTF-8 text."""
    parts: list[str] = []

    def walk(node) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            parts.append(text_format.MessageToString(proto, as_utf8=True))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return "\n".join(parts)


def test_glossary_page_explains_the_key_terms_and_filters(app_env) -> None:
    at = ok(open_page("glossary"))
    shown = texts(at).replace("\\", "")
    for term in KEY_TERMS:
        assert term.casefold() in shown.casefold(), term
    assert len(at.markdown) == len(glossary.GLOSSARY)
    at.text_input(key="glossary_query").input("LiSSA").run()
    shown = texts(ok(at))
    assert "LiSSA damping" in shown and "Noise ceiling" not in shown
    at.text_input(key="glossary_query").input("zzz-nothing").run()
    assert "No entry mentions" in texts(at) and not at.markdown


def test_no_page_cites_the_developer_document(app_env) -> None:
    """No page's visible text or widget help mentions METHOD (e.g. "METHOD §6"): the app explains itself."""
    pages = re.findall(r'st\.Page\("pages/(\w+)\.py"', (REPO / "app.py").read_text())
    assert {"home", "saliency", "examples", "disentanglement", "lucent", "glossary"} <= set(pages)
    for page in pages:
        at = ok(open_page(page, dataset="mnist", model="mnist_betavae_b1_run1"))
        shown = shown_text(at)
        if page == "saliency":  # the walk sees the sidebar's widgets and their help texts
            assert "Encoder" in shown and "listed by experiment" in shown
        assert not re.search(r"\bMETHOD\b", shown), (page, re.findall(r".{60}\bMETHOD\b.{20}", shown))
        if page == "lucent":
            assert at.number_input(key="luc_steps").help == glossary.define("Render steps")


def test_model_selector_groups_by_experiment_and_follows_a_link(app_env) -> None:
    linked = "mnist_pretext_classification_run1"
    at = ok(open_page("saliency", query={"dataset": "mnist", "model": linked}))
    box = at.selectbox(key="saliency_model")
    assert box.value == linked and at.session_state["sel_model"] == linked
    groups = [label.split(" › ")[0] for label in box.options]
    assert set(groups) == {"Consistency", "Pretext", "Disentanglement"}
    runs = [g for i, g in enumerate(groups) if i == 0 or g != groups[i - 1]]
    assert len(runs) == len(set(runs)), groups  # each experiment's models are listed together
    assert box.options[box.index].startswith("Pretext › ")  # the link selects its experiment's entry
    assert at.query_params["model"] == linked
    # picking another model keeps working and is written back to the link
    at.selectbox(key="saliency_model").set_value("mnist_dae_consistency").run()
    assert ok(at).session_state["sel_model"] == "mnist_dae_consistency"
    assert at.query_params["model"] == "mnist_dae_consistency"


def test_home_tables_have_no_empty_cells(app_env) -> None:
    at = ok(open_page("home"))
    frames = [d.value for d in at.dataframe]
    models = next(f for f in frames if "accuracy" in f)
    assert (models["accuracy"] == "—").any()  # autoencoders have no accuracy: a dash, not None
    for frame in frames:
        assert not frame.isna().any().any()
        assert not frame.astype(str).isin(["None", "nan", "NaN", "<NA>"]).any().any()
    assert any(link.proto.page == "pages/glossary.py" or "Glossary" in link.proto.label
               for link in at.get("page_link"))



# ---------------------------------------------------------------------------- layout at 1024 px


def test_disentanglement_chart_fits_with_its_legend_on_top() -> None:
    from lfx_ui import study_charts as sc

    long = pd.DataFrame([{"model": f"m{b}{loss}", "loss": loss, "beta": b, "run": 1, "metric": metric, "value": 0.1}
                         for loss in sc.LOSS_TITLES for b in (1, 5, 10) for metric in sc.METRIC_TITLES])
    spec = sc.disentanglement_metrics(long, pd.DataFrame(columns=["metric", "loss", "beta", "mean", "std"]),
                                      "MNIST", box=False).to_dict()
    panels = spec["concat"]
    assert len(panels) == len(sc.METRIC_TITLES) and spec["columns"] * panels[0]["width"] <= 600
    legends = [layer["encoding"]["color"]["legend"] for p in panels for layer in p["layer"]]
    assert legends and all(leg["orient"] == "top" for leg in legends)


def test_ecg_galleries_and_gallery_labels_fit(app_env) -> None:
    at = ok(open_page("saliency", dataset="ecg5000", model="ecg5000_lstm_ae", methods=["saliency"]))
    picks = [b for b in at.button if b.key and b.key.startswith("sal_pick_")]
    assert picks and all(len(b.label.split(" · ")[1]) <= 4 for b in picks)  # "abn." for abnormal
    assert all("(class normal)" in b.help or "(class abnormal)" in b.help for b in picks)
    assert any(b.label.endswith("· nor.") or b.label.endswith("· abn.") for b in picks)
    at.switch_page("pages/examples.py").run()
    facets = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart") if '"facet"' in c.proto.spec]
    assert facets and all(f["columns"] <= 5 for f in facets)
