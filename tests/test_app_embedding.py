"""AppTest of the Embedding page against a tiny real zoo: the PCA map with hover thumbnails, colouring by a latent
unit, a click selecting a sample with its nearest training examples, a box selecting a group, the ECG model."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("streamlit.testing.v1")
from streamlit.testing.v1 import AppTest  # noqa: E402

import apptest_helpers  # noqa: E402
from apptest_helpers import ok, texts  # noqa: E402
from browser.tiny_zoo import build_tiny_zoo, find_real_data  # noqa: E402
from lfx_ui import charts  # noqa: E402

TIMEOUT = 120
ENTRIES = [("mnist_dae_consistency", 1, 1), ("ecg5000_lstm_ae", 1, 1)]


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory) -> dict[str, str]:
    data = find_real_data()
    if data is None:
        pytest.skip("real datasets not found (set LFX_DATA_DIR or place ../shared/data)")
    return build_tiny_zoo(tmp_path_factory.mktemp("lfx_emb_zoo"), data, entries=ENTRIES)


@pytest.fixture(autouse=True)
def app_env(tiny_zoo, monkeypatch) -> dict[str, str]:
    for key, value in tiny_zoo.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tiny_zoo


def open_embedding(dataset: str, model: str, points: int = 500) -> AppTest:
    """The Embedding page on ``model`` with the first ``points`` test inputs plotted."""
    at = apptest_helpers.open_page("embedding", timeout=TIMEOUT, dataset=dataset, model=model)
    ok(at)
    at.selectbox(key="emb_points").select(points).run()
    return ok(at)


def spec(at: AppTest) -> dict:
    return json.loads(at.get("vega_lite_chart")[0].proto.spec)


def values(at: AppTest) -> list[dict]:
    """The rows of the scatter's points layer (Streamlit sends the data as Arrow datasets beside the spec)."""
    import pyarrow as pa

    chart = at.get("vega_lite_chart")[0].proto
    tables = [pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in chart.datasets]
    frame = max(tables, key=len)
    return frame.to_dict("records")


def test_pca_map_with_thumbnails_click_and_nearest_examples() -> None:
    at = open_embedding("mnist", "mnist_dae_consistency")
    rows = values(at)
    assert len(rows) == 500 and rows[0]["image"].startswith("data:image/png;base64,")
    text = json.dumps(spec(at))
    assert '"pick"' in text and '"group"' in text and '"image"' in text
    assert "Test sample #0: nearest training examples" in texts(at)
    at.session_state[charts.EMBEDDING_CHART_KEY] = {"selection": {"pick": [{"idx": 7}]}}
    ok(at.run())
    assert at.session_state["sel_sample"] == 7 and at.query_params["sample"] == "7"
    assert "Test sample #7: nearest training examples" in texts(at)
    assert len(at.image) == 9  # the clicked sample and its 8 nearest training examples
    assert "train #" in str(at.image[1].proto) and "d=" in str(at.image[1].proto)


def test_box_selection_explains_the_group() -> None:
    at = open_embedding("mnist", "mnist_dae_consistency")
    rows = values(at)
    xs = sorted(r["x"] for r in rows)
    ys = sorted(r["y"] for r in rows)
    box = {"x": [xs[0], xs[len(xs) // 2]], "y": [ys[0], ys[-1]]}
    expected = sum(1 for r in rows if box["x"][0] <= r["x"] <= box["x"][1] and box["y"][0] <= r["y"] <= box["y"][1])
    at.session_state[charts.EMBEDDING_CHART_KEY] = {"selection": {"group": box}}
    ok(at.run())
    assert f"**{expected} test inputs** in the box." in texts(at)
    assert "averages 64 members (capped: the 64 lowest-indexed members)" in texts(at)
    assert len(at.get("vega_lite_chart")) == 2  # the map and the class mix
    at.session_state[charts.EMBEDDING_CHART_KEY] = {"selection": {"group": {"x": [1e9, 2e9], "y": [1e9, 2e9]}}}
    ok(at.run())
    assert "The box holds no points" in texts(at)


def test_colour_by_a_latent_unit() -> None:
    at = open_embedding("mnist", "mnist_dae_consistency")
    at.selectbox(key="emb_colour").select("unit").run()
    ok(at)
    at.number_input(key="emb_unit").set_value(1).run()
    ok(at)
    s = spec(at)
    assert s["layer"][0]["encoding"]["color"]["field"] == "unit_1"
    assert all("unit_1" in r for r in values(at))
    assert at.session_state["emb_colour"] == "unit"


def test_tsne_is_computed_on_request() -> None:
    at = open_embedding("mnist", "mnist_dae_consistency")
    at.selectbox(key="emb_method").select("tsne").run()
    ok(at)
    assert not at.get("vega_lite_chart") and at.button(key="emb_compute")
    at.button(key="emb_compute").click().run()
    ok(at)
    assert len(values(at)) == 500 and "t-SNE of 500 test latents" in json.dumps(spec(at))


def test_ecg_model_renders() -> None:
    at = open_embedding("ecg5000", "ecg5000_lstm_ae")
    rows = values(at)
    assert len(rows) == 500 and rows[0]["image"].startswith("data:image/png;base64,")
    assert "nearest training examples" in texts(at)


def test_colour_by_an_attribution_statistic() -> None:
    at = open_embedding("mnist", "mnist_dae_consistency")
    at.selectbox(key="emb_colour").select("stat").run()
    ok(at)
    at.selectbox(key="emb_stat_method").select("saliency").run()
    ok(at).button(key="emb_stats_go").click().run()
    ok(at)
    assert spec(at)["layer"][0]["encoding"]["color"]["field"] == "total"
    assert len(values(at)) == 200 and "Only the first 200 points are plotted" in texts(at)
