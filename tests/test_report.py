"""The shareable HTML report: every figure of the view, its settings and a deep link that reopens it."""
from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pandas as pd
import pytest

from apptest_helpers import ok, open_page
from lfx_ui import report

TIMEOUT = 120


@pytest.fixture(autouse=True)
def app_env(tiny_app_env) -> dict[str, str]:
    return tiny_app_env


def _report_of(at):
    collected = at.session_state[report._KEY]
    title, settings, link = at.session_state[report.VIEW_KEY]
    return title, settings, link, list(collected.figures.values())


def test_masking_report_holds_every_figure_and_a_link_that_reopens_the_view() -> None:
    at = ok(open_page("masking", timeout=TIMEOUT, dataset="mnist", model="mnist_dae_consistency",
                      methods=["saliency"], sample=2))
    at.slider(key="mask_n").set_value(10).run()
    at.selectbox(key="mask_view_method").select("random").run()
    ok(at)
    assert any(b.proto.label == "Report (HTML)" for b in at.get("download_button"))
    title, settings, link, figures = _report_of(at)
    assert title == "Masking shift"
    assert settings["model"] == "mnist_dae_consistency" and settings["sample"] == "2"
    assert settings["mask_n"] == "10" and settings["mask_view_method"] == "Random (control)"
    assert [f.stem for f in figures] == ["masking_mnist_dae_consistency_n10", "masking_areas_mnist_dae_consistency_n10",
                                         "masking_mnist_dae_consistency_sample2",
                                         "masked_mnist_dae_consistency_sample2_random"]
    page = report.build_html(title, settings, link, figures, "test")
    assert page.count("<section>") == 4
    assert page.count("<svg") == 2                      # the two curves, as inline SVG
    assert page.count("data:image/png;base64,") == 1    # the masked inputs, as an embedded PNG
    assert page.count("data:text/csv;base64,") == 4     # every figure's full data
    assert "http" not in re.sub(r"(xmlns(:\w+)?|href)=['\"][^'\"]*['\"]", "", page).replace(link, "")  # offline
    # the link reopens the same view in a new session
    parts = urlsplit(link)
    assert parts.path == "/masking"
    again = ok(open_page("masking", timeout=TIMEOUT, query=dict(parse_qsl(parts.query))))
    assert again.slider(key="mask_n").value == 10
    assert again.selectbox(key="mask_view_method").value == "random"
    assert again.number_input(key="mask_sample").value == 2


def test_report_escapes_everything_from_the_view() -> None:
    frame = pd.DataFrame({"name": ["<script>alert(1)</script>"], "value": [np.pi]})
    fig = report.Figure("a<b>", csv=frame)
    page = report.build_html("<img src=x onerror=1>", {"model": "<b>x</b>"}, "/p?x=<y>", [fig], "v")
    assert "<script>" not in page and "<img src=x" not in page and "<b>x</b>" not in page
    assert "&lt;script&gt;" in page and "3.14159" in page


def test_a_failing_figure_does_not_lose_the_report() -> None:
    def broken() -> bytes:
        raise RuntimeError("no")

    page = report.build_html("t", {}, "/p", [report.Figure("bad", png=broken),
                                             report.Figure("good", csv=pd.DataFrame({"a": range(300)}))], "v")
    assert "could not be drawn (RuntimeError)" in page
    assert "First 200 of 300 rows" in page and page.count("<tr>") >= 200
