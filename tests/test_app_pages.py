"""AppTest of every page of the explorer against a tiny real zoo (real data, 1-2 epoch models).

Covers every dataset × model × method the tiny zoo offers on each page, the
gallery and latent-map selections (injected through session state), deep links,
bad uploads and missing data/models. Needs the real datasets (skipped otherwise).
"""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image, ImageDraw

pytest.importorskip("streamlit.testing.v1")
from streamlit.testing.v1 import AppTest  # noqa: E402

import apptest_helpers  # noqa: E402
from apptest_helpers import ok, texts  # noqa: E402
from browser.tiny_zoo import ENTRIES  # noqa: E402
from lfx_engine.example_importance import bottom_meaning  # noqa: E402
from lfx_engine.explorer import EXAMPLE_METHODS, FEATURE_METHODS  # noqa: E402
from lfx_ui import upload  # noqa: E402

TIMEOUT = 90
MODELS = {name: ("ecg5000" if name.startswith("ecg") else "mnist") for name, _, _ in ENTRIES}
GALLERY = 24


@pytest.fixture(autouse=True)
def app_env(tiny_app_env) -> dict[str, str]:
    return tiny_app_env


def open_page(page: str, query: dict[str, str] | None = None, **selection) -> AppTest:
    """A fresh session on ``page`` with a preset selection (or URL), after the router's first run."""
    return apptest_helpers.open_page(page, timeout=TIMEOUT, query=query, **selection)


def charts(at: AppTest) -> list:
    return list(at.get("vega_lite_chart"))


def png(size=(28, 28), mode="L", color=200) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------- home


def test_home_lists_datasets_models_device_and_commands() -> None:
    at = ok(open_page("home"))
    frames = [d.value for d in at.dataframe]
    datasets, models = frames[0], frames[1]
    assert {"MNIST", "ECG5000"} <= set(datasets["dataset"])
    assert set(models["model"]) == set(MODELS)
    assert models["test loss"].notna().all()
    assert any("CPU" in i.value for i in at.info)
    assert "python -m lfx_engine train" in texts(at)
    assert len(at.get("page_link")) >= 3


# ---------------------------------------------------------------------------- saliency


@pytest.mark.parametrize("name", list(MODELS))
def test_saliency_every_method(name: str) -> None:
    at = ok(open_page("saliency", dataset=MODELS[name], model=name, methods=list(FEATURE_METHODS), sample=3))
    assert at.session_state["sel_model"] == name
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Methods"] == str(len(FEATURE_METHODS))
    assert float(metrics["Attribution time"].split()[0]) >= 0
    assert "Test sample #3" in texts(at)
    gallery = len(at.button) and [b for b in at.button if b.key and b.key.startswith("sal_pick_")]
    assert len(gallery) == GALLERY
    if MODELS[name] == "ecg5000":
        assert len(charts(at)) == len(FEATURE_METHODS)  # one shaded beat per method
        assert len(at.image) == GALLERY
    else:
        # per method: input, |attr| + colour bar, signed + colour bar, overlay
        assert len(at.image) == GALLERY + 6 * len(FEATURE_METHODS)
    assert at.query_params["methods"] == ",".join(FEATURE_METHODS)
    assert at.query_params["sample"] == "3"


def test_gallery_click_class_filter_and_paging() -> None:
    at = ok(open_page("saliency", dataset="mnist", model="mnist_dae_consistency", methods=["saliency"]))
    at.selectbox(key="sal_cls").select("7").run()
    ok(at)
    labels = [b.label for b in at.button if b.key and b.key.startswith("sal_pick_")]
    assert labels and all(label.endswith("· 7") for label in labels)
    target = next(b for b in at.button if b.key and b.key.startswith("sal_pick_"))
    index = int(target.key.rsplit("_", 1)[1])
    target.click().run()
    ok(at)
    assert at.session_state["sel_sample"] == index
    assert f"Test sample #{index} (class 7)" in texts(at)
    assert at.query_params["sample"] == str(index) and at.query_params["cls"] == "7"
    at.number_input(key="sal_goto").set_value(42).run()
    assert ok(at).session_state["sel_sample"] == 42


@pytest.mark.parametrize("name", ["mnist_dae_consistency", "ecg5000_lstm_ae"])
def test_latent_map_selection(name: str) -> None:
    at = open_page("saliency", dataset=MODELS[name], model=name, methods=["saliency"])
    at.session_state["sal_source"] = "Latent map"
    ok(at.run())
    spec = charts(at)[0].proto.spec
    assert '"pick"' in spec and '"idx"' in spec
    at.session_state["latent_chart"] = {"selection": {"pick": [{"idx": 3}]}}
    ok(at.run())
    assert at.session_state["sel_sample"] == 3
    assert "Test sample #3" in texts(at)
    assert at.query_params["sample"] == "3"


def test_deep_link_restores_the_view() -> None:
    query = {"dataset": "mnist", "model": "mnist_betavae_b1_run1", "sample": "5", "methods": "saliency"}
    at = ok(open_page("saliency", query=query))
    assert at.session_state["sel_model"] == "mnist_betavae_b1_run1"
    assert at.selectbox(key="saliency_model").value == "mnist_betavae_b1_run1"
    assert at.multiselect(key="sal_methods").value == ["saliency"]
    assert "Test sample #5" in texts(at)
    assert len(at.image) == GALLERY + 6
    assert dict(at.query_params) | query == dict(at.query_params)
    # the same link on the other pages keeps the selection
    at.switch_page("pages/masking.py").run()
    assert ok(at).number_input(key="mask_sample").value == 5


def specs_text(at: AppTest) -> str:
    return "\n".join(c.proto.spec for c in charts(at))


def test_deep_links_restore_every_view_setting() -> None:
    """Tabs, sizes, colour maps and method parameters come back from a shared link."""
    base = {"dataset": "mnist", "model": "mnist_dae_consistency", "sample": "7", "methods": "saliency"}
    at = ok(open_page("saliency", query={**base, "sal_view": "signed", "sal_cmap": "viridis",
                                         "sal_scmap": "PuOr_r"}))
    assert at.selectbox(key="sal_cmap").value == "viridis" and at.selectbox(key="sal_scmap").value == "PuOr_r"
    assert len(at.image) == GALLERY + 4  # input, signed map + its colour bar, overlay: no |attr| tile
    at = ok(open_page("saliency", query={**base, "sal_source": "Latent map"}))
    assert at.session_state["sal_source"] == "Latent map" and '"pick"' in specs_text(at)
    at = ok(open_page("masking", query={**base, "mask_n": "20", "mask_view_method": "Random (control)"}))
    assert at.slider(key="mask_n").value == 20 and at.selectbox(key="mask_view_method").value == "random"
    assert "n = 20" in specs_text(at)
    query = {**base, "xmethods": "dknn,influence", "ex_n": "100", "ex_k": "5", "ex_tab": "Influence Functions",
             "ex_influence_recursion_depth": "3", "ex_influence_hessian": "exact"}
    at = ok(open_page("examples", query=query))
    assert at.selectbox(key="ex_n").value == 100 and at.slider(key="ex_k").value == 5
    assert at.session_state["ex_tab"] == "Influence Functions"
    assert at.number_input(key="ex_influence_recursion_depth").value == 3
    assert at.selectbox(key="ex_influence_hessian").value == "exact"
    assert at.session_state["ex_params_influence"]["recursion_depth"] == 3  # the linked settings apply
    # a bad value in a link is dropped, not fatal
    at = ok(open_page("examples", query={**base, "xmethods": "dknn", "ex_n": "12345", "ex_k": "abc"}))
    assert at.selectbox(key="ex_n").value == 200 and at.slider(key="ex_k").value == 8


def test_compare_two_models_and_two_methods_on_one_sample() -> None:
    from lfx_engine.explorer import Explorer
    from lfx_engine.metrics import map_agreement

    query = {"dataset": "mnist", "model": "mnist_dae_consistency", "sample": "6", "cmp_method_a": "Saliency",
             "cmp_model_b": "mnist_pretext_classification_run1", "cmp_method_b": "Integrated Gradients"}
    at = ok(open_page("compare", query=query))
    assert at.selectbox(key="cmp_model_b").value == "mnist_pretext_classification_run1"
    assert at.selectbox(key="cmp_method_b").value == "integrated_gradients"  # restored from the link
    # only encoders whose inputs have A's shape are offered (the VAEs here take padded 32×32 inputs)
    assert "mnist_betavae_b1_run1" not in at.selectbox(key="cmp_model_b").options
    explorer = Explorer(device="cpu")
    x, _ = explorer.sample("mnist_dae_consistency", 6)
    maps = [np.abs(explorer.display_map(explorer.attribute(m, x, method), signed=True)[0])
            for m, method in (("mnist_dae_consistency", "saliency"),
                              ("mnist_pretext_classification_run1", "integrated_gradients"))]
    expected = map_agreement(*maps)
    cards = {m.label: m.value for m in at.metric}
    assert cards["Pearson of |attr|"] == f"{expected['pearson']:.3f}"
    assert cards["Spearman of |attr|"] == f"{expected['spearman']:.3f}"
    assert cards["Top-10% overlap"] == f"{expected['top_overlap']:.0%}"
    assert len(at.image) == 1 + 2 * 3  # the sample tile; input, |attr|, signed per side
    assert "A: " in texts(at) and "B: " in texts(at)
    # one model, two methods: B takes A's encoder; the same method on both sides agrees perfectly
    at.selectbox(key="cmp_model_b").set_value("mnist_dae_consistency").run()
    at.selectbox(key="cmp_method_b").set_value("saliency").run()
    cards = {m.label: m.value for m in ok(at).metric}
    assert cards["Pearson of |attr|"] == "1.000" and cards["Top-10% overlap"] == "100%"


def test_switching_dataset_after_a_link_blames_no_link() -> None:
    """Opened from a link, then the user changes the dataset: the link's model is left behind, not 'asked for'."""
    at = ok(open_page("saliency", query={"dataset": "mnist", "model": "mnist_dae_consistency", "sample": "5000",
                                         "methods": "saliency"}))
    assert "Test sample #5000" in texts(at)
    at.selectbox(key="saliency_dataset").select("ecg5000").run()
    assert ok(at).session_state["sel_model"] == "ecg5000_lstm_ae"
    assert "The link asked for" not in texts(at) and not at.warning
    assert "brings #5000 back" in texts(at)
    at.selectbox(key="saliency_dataset").select("mnist").run()
    assert "Test sample #5000" in texts(ok(at)) and not at.warning


def test_switching_dataset_keeps_every_widget_in_range() -> None:
    at = ok(open_page("saliency", dataset="mnist", model="mnist_dae_consistency", methods=["saliency"]))
    at.number_input(key="sal_goto").set_value(5000).run()
    assert ok(at).session_state["sel_sample"] == 5000
    at.selectbox(key="saliency_dataset").select("ecg5000").run()
    ok(at)
    assert at.session_state["sel_model"] == "ecg5000_lstm_ae" and at.session_state["sel_sample"] == 0
    assert "is not in this test split" in texts(at) and "brings #5000 back" in texts(at)
    assert not at.warning  # a switch is not a problem: no warning, no claim about a link
    at.selectbox(key="saliency_dataset").select("mnist").run()
    assert ok(at).session_state["sel_sample"] == 5000  # the MNIST sample comes back
    assert "Test sample #5000" in texts(at)
    at.selectbox(key="saliency_dataset").select("ecg5000").run()
    assert ok(at).session_state["sel_sample"] == 0
    at.switch_page("pages/masking.py").run()
    at.selectbox(key="masking_dataset").select("mnist").run()
    at.slider(key="mask_n").set_value(1500)
    at.multiselect(key="mask_methods").set_value([]).run()  # no method: nothing is computed
    assert "Pick at least one" in texts(ok(at))
    at.selectbox(key="masking_dataset").select("ecg5000").run()
    assert ok(at).slider(key="mask_n").value == 1000


def test_bad_links_are_explained_not_fatal() -> None:
    query = {"dataset": "ecg5000", "model": "ecg5000_missing_model", "sample": "abc", "cls": "nonsense"}
    at = open_page("saliency", query=query)
    assert not at.exception
    shown = texts(at)
    # the name is shown escaped, and no command is offered for a name that is no zoo recipe
    assert r"ecg5000\_missing\_model" in shown and "which is not a model for ECG5000" in shown
    assert "python -m lfx_engine train" not in shown
    assert "not a number" in shown and "The link's class **nonsense** is not a class" in shown
    assert at.session_state["sel_model"] == "ecg5000_lstm_ae"
    at = open_page("saliency", query={"dataset": "mnist", "model": "mnist_pretext_denoising_run2"})
    assert "not trained here" in texts(at) and "python -m lfx_engine train mnist_pretext_denoising_run2" in texts(at)
    at = open_page("saliency", query={"dataset": "mnist", "model": "mnist_dae_consistency", "sample": "99999"})
    assert not at.exception and "does not exist" in texts(at)
    assert "Test sample #0" in texts(at)


def captions(at: AppTest) -> list[str]:
    """The captions of every image on the page (before/after tiles, heat maps, colour bars)."""
    return [c for image in at.image for c in image.captions]


def heat_maps(at: AppTest) -> int:
    """How many |attr| heat maps the per-sample panel shows."""
    return sum("heat map" in c for c in captions(at))


def upload_file(at: AppTest, filename: str, content: bytes, mime: str = "image/png") -> AppTest:
    at.file_uploader(key="sal_upload").set_value((filename, content, mime)).run()
    return at


def fix_box(at: AppTest, kind: str):
    """The conversion checkbox of ``kind`` for the current file (its key carries the file's digest)."""
    boxes = [c for c in at.checkbox if c.key and c.key.startswith(f"sal_fix_{kind}_")]
    assert len(boxes) == 1, [c.key for c in at.checkbox]
    return boxes[0]


def test_bad_uploads_show_errors_and_offer_fixes() -> None:
    at = ok(open_page("saliency", dataset="mnist", model="mnist_dae_consistency", methods=["saliency"]))
    at.session_state["sal_source"] = "Upload"
    ok(at.run())
    upload_file(at, "digit.png", os.urandom(2000))
    assert not at.exception
    assert any("not a PNG or JPEG" in e.value for e in at.error)
    assert at.session_state["sel_model"] == "mnist_dae_consistency"  # state kept
    # colour image of the wrong size: previewed and converted at once, nothing to tick
    ok(upload_file(at, "photo.png", png((40, 30), "RGB", (10, 200, 30))))
    assert fix_box(at, "resize").value and fix_box(at, "convert").value
    assert r"Your upload “photo\.png”" in texts(at)  # file names are shown escaped, never as Markdown
    assert "as uploaded (colour)" in captions(at) and any(c.startswith("what the model receives: 1×28×28")
                                                          for c in captions(at))
    assert heat_maps(at) == 1
    # unticking a needed conversion says why the file cannot be used as is, and no panel is drawn
    fix_box(at, "convert").uncheck().run()
    errors = " ".join(e.value for e in at.error)
    assert "grayscale" in errors and "cannot be used as is" in errors
    assert not [m for m in at.metric if m.label == "Methods"] and heat_maps(at) == 0
    fix_box(at, "convert").check()
    fix_box(at, "resize").uncheck()
    fix_box(at, "centre").uncheck().run()
    assert "40×30" in " ".join(e.value for e in at.error) and heat_maps(at) == 0
    # a valid 28×28 grayscale digit works directly, with nothing proposed but the optional conversions
    ok(upload_file(at, "ok.png", png()))
    assert heat_maps(at) == 1 and not [c for c in at.checkbox if "resize" in (c.key or "")]


def test_rgb_photo_of_a_digit_is_explained_without_ticking_anything() -> None:
    at = ok(open_page("saliency", dataset="mnist", model="mnist_dae_consistency", methods=["saliency"]))
    at.session_state["sal_source"] = "Upload"
    ok(at.run())
    photo = Image.new("RGB", (200, 150), (240, 235, 230))
    ImageDraw.Draw(photo).rectangle((80, 30, 110, 120), fill=(30, 20, 40))  # a dark "1" on light paper
    ok(upload_file(at, "one.png", _bytes(photo)))
    assert fix_box(at, "invert").value and fix_box(at, "centre").value  # dark on light: inversion proposed
    assert heat_maps(at) == 1 and "Your upload" in texts(at)
    fix_box(at, "invert").uncheck().run()
    assert heat_maps(at) == 1
    # a second, different file starts with fresh settings (light-on-dark: inversion proposed off)
    fix_box(at, "invert").check().run()
    ok(upload_file(at, "dark.png", png((28, 28), "L", 10)))
    assert not fix_box(at, "invert").value
    # and the first file again gets its own proposal back, not the second file's ticks
    ok(upload_file(at, "other.png", _bytes(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT))))
    assert fix_box(at, "invert").value


def _bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def test_upload_decoder_cases() -> None:
    shape = (1, 28, 28)
    assert upload.decode_image(png(), "a.png", shape).ok
    assert "empty" in upload.decode_image(b"", "e.png", shape).errors[0]
    assert "too large" in upload.decode_image(b"0" * (upload.MAX_BYTES + 1), "big.png", shape).errors[0]
    assert "not a PNG or JPEG" in upload.decode_image(b"hello world", "t.png", shape).errors[0]
    gif = io.BytesIO()
    Image.new("L", (28, 28)).save(gif, format="GIF")
    assert "GIF" in upload.decode_image(gif.getvalue(), "g.png", shape).errors[0]
    jpeg = io.BytesIO()
    Image.new("RGB", (56, 56), (255, 255, 255)).save(jpeg, format="JPEG")
    wrong = upload.decode_image(jpeg.getvalue(), "j.jpg", shape)
    assert not wrong.ok and set(wrong.fixable) == {"resize", "convert"}
    fixed = upload.decode_image(jpeg.getvalue(), "j.jpg", shape, resize=True, convert=True, invert=True)
    assert fixed.ok and tuple(fixed.x.shape) == (1, 1, 28, 28) and float(fixed.x.max()) < 0.05
    noise = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (28, 28), dtype=np.uint8)).save(noise, format="PNG")
    cut = upload.decode_image(noise.getvalue()[: len(noise.getvalue()) // 2], "cut.png", shape)
    assert not cut.ok and "truncated" in cut.errors[0]
    beat = ",".join(str(v) for v in np.sin(np.linspace(0, 6, 140)))
    assert tuple(upload.decode_series(beat.encode(), "b.csv", 140).x.shape) == (1, 140, 1)
    short = upload.decode_series(b"1,2,3,4", "s.csv", 140)
    assert not short.ok and "resample" in short.fixable
    assert upload.decode_series(b"1,2,3,4", "s.csv", 140, resample=True).ok
    assert "not a number" in upload.decode_series(b"1,2,x", "x.csv", 140).errors[0]
    assert not upload.decode_series(b"\xff\xfe\x00", "bin.csv", 140).ok


def test_ecg_upload_of_a_beat() -> None:
    at = ok(open_page("saliency", dataset="ecg5000", model="ecg5000_lstm_ae", methods=["saliency"]))
    at.session_state["sal_source"] = "Upload"
    ok(at.run())
    ok(upload_file(at, "beat.csv", b"0.1, 0.2, 0.3", "text/csv"))  # resampled (and z-normalised) by default
    assert len(charts(at)) == 1 and "Your upload" in texts(at)
    fix_box(at, "resample").uncheck().run()
    assert any("3 values" in e.value and "cannot be used as is" in e.value for e in at.error)
    assert not charts(at)


def test_ecg_upload_of_a_headered_two_column_csv() -> None:
    at = ok(open_page("saliency", dataset="ecg5000", model="ecg5000_lstm_ae", methods=["saliency"]))
    at.session_state["sal_source"] = "Upload"
    ok(at.run())
    t = np.arange(140)
    table = "time,value\n" + "\n".join(f"{i},{v:.4f}" for i, v in zip(t, 2.0 + np.sin(t / 9.0)))
    ok(upload_file(at, "beat.csv", table.encode(), "text/csv"))
    column = at.selectbox(key=[s.key for s in at.selectbox if s.key.startswith("sal_upload_column_")][0])
    assert column.value == "value" and column.options == ["time", "value"]
    assert fix_box(at, "znorm").value  # mean 2: not z-normalised, so z-normalisation is proposed
    assert len(charts(at)) == 1 and "Your upload" in texts(at)
    received = next(c for c in captions(at) if c.startswith("what the model receives: 140×1, "))
    low, high = (float(v) for v in received.split(", ")[1].split(" … "))
    assert -2 < low < -1 and 1 < high < 2  # z-normalised, while the upload spans 1 … 3
    assert any(c.startswith("as uploaded: 140 values, 1 … 3") for c in captions(at)), captions(at)
    column.select("time").run()  # the other column is a beat too (0…139, far beyond the data unless z-normalised)
    ok(at)
    assert len(charts(at)) == 1


# ---------------------------------------------------------------------------- masking


@pytest.mark.parametrize("name", list(MODELS))
def test_masking_every_method(name: str) -> None:
    at = ok(open_page("masking", dataset=MODELS[name], model=name, methods=["saliency"], sample=2))
    at.slider(key="mask_n").set_value(10)
    at.multiselect(key="mask_methods").set_value(list(FEATURE_METHODS)).run()
    ok(at)
    specs = [c.proto.spec for c in charts(at)]
    assert len(specs) >= 2  # dataset-wide curves with CI band + the sample's curve (+ masked beats for ECG)
    assert '"area"' in specs[0] and "ci_low" in specs[0]
    metrics = [m.label for m in at.metric]
    assert len(metrics) == len(FEATURE_METHODS)
    table = at.dataframe[0].value
    assert table.shape == (7, len(FEATURE_METHODS) + 1)
    assert "Random (control)" in table.columns, "the random control is always computed and plotted"
    assert np.isfinite(table.to_numpy()).all()
    assert at.number_input(key="mask_sample").value == 2
    if MODELS[name] == "mnist":
        assert len(at.image) == 2  # the sample tile and the masked views
        assert "Cyan marks the masked pixels" in texts(at)
    else:  # small multiples: the beat, the masked beat and the masked steps per level
        assert "masked time steps" in specs_text(at)
    # any method can be the one whose masking is shown
    at.selectbox(key="mask_view_method").select("random").run()
    ok(at)


def test_a_stopped_masking_run_waits_for_the_user() -> None:
    """After Stop (the button's callback flags the session), nothing restarts by itself."""
    at = open_page("masking", dataset="mnist", model="mnist_dae_consistency", methods=["saliency"], sample=0)
    at.session_state["_lfx_stopped"] = "the masking curves"
    at.session_state["mask_paused"] = True
    at.slider(key="mask_n").set_value(30).run()
    ok(at)
    assert "Stopped: the masking curves" in texts(at) and "stopped before they finished" in texts(at)
    assert not any('"area"' in c.proto.spec for c in charts(at))  # no curves were computed
    at.button(key="mask_resume").click().run()
    ok(at)
    assert "Stopped" not in texts(at) and '"area"' in charts(at)[0].proto.spec
    assert not any(b.key == "mask_stop" for b in at.button)  # the Stop button goes with the finished job


def test_masking_reference_controls_from_a_link() -> None:
    """Every control from a shared link: the curves, the area-between-curves table and the URL."""
    query = {"dataset": "mnist", "model": "mnist_dae_consistency", "methods": "saliency,gradient_shap",
             "controls": "random_informative,model_free,random_init", "sample": "1"}
    at = ok(open_page("masking", query=query))
    at.slider(key="mask_n").set_value(10).run()
    ok(at)
    assert at.multiselect(key="mask_controls").value == ["random_informative", "model_free", "random_init"]
    spec = charts(at)[0].proto.spec
    for label in ("Random among informative features", "model-free (control)", "Saliency on a random encoder",
                  "GradientShap on a random encoder"):
        assert label in spec
    areas = at.dataframe[0].value
    assert len(areas) == 2 * 4 and set(areas["verdict"]) <= {"above", "below", "not resolved"}
    assert "same method on a random encoder" in set(areas["control"])
    assert (areas["ci_low"] <= areas["ci_high"]).all()
    assert [m.label for m in at.metric] == ["Saliency − random", "GradientShap − random"]
    assert at.query_params["controls"] == "random_informative,model_free,random_init"
    # dropping the controls goes back to the (cached) random-only view
    at.multiselect(key="mask_controls").set_value([]).run()
    ok(at)
    assert "controls" not in at.query_params
    assert "random encoder" not in charts(at)[0].proto.spec


# ---------------------------------------------------------------------------- top examples


def _submit(at: AppTest, prefix: str) -> AppTest:
    button = next(b for b in at.button if b.label.startswith(prefix))
    return button.click().run()


@pytest.mark.parametrize("name", list(MODELS))
def test_examples_every_method(name: str) -> None:
    at = ok(open_page("examples", dataset=MODELS[name], model=name, xmethods=list(EXAMPLE_METHODS), sample=4))
    at.selectbox(key="ex_n").set_value(100).run()
    assert [t.label for t in at.tabs] == ["DKNN", "Cosine NN", "SimplEx", "TracIn", "Influence Functions",
                                          "Similarity rates"]
    for method, label in zip(EXAMPLE_METHODS, ["DKNN", "Cosine NN", "SimplEx", "TracIn", "Influence Functions"]):
        at.session_state["ex_tab"] = label
        ok(at.run())
        gradient = method in ("tracin", "influence")
        if gradient and name in ("mnist_pretext_classification_run1", "mnist_betavae_b1_run1"):
            assert "autoencoder" in texts(at)
            continue
        if gradient:
            assert any("Press **Compute**" in i.value for i in at.info)  # nothing runs before the submit
            if method == "influence":
                at.number_input(key="ex_influence_recursion_depth").set_value(2)
                at.number_input(key="ex_influence_minibatch_size").set_value(16)
                hessian = at.selectbox(key="ex_influence_hessian")
                assert list(hessian.options) == ["exact", "gauss_newton", "auto"] and hessian.value == "auto"
                hessian.set_value("exact" if MODELS[name] == "ecg5000" else "gauss_newton")
            else:
                budget = at.number_input(key="ex_tracin_max_memory_mb")
                assert budget.label == "memory budget (MB)" and budget.value == 2048
                if MODELS[name] != "ecg5000":  # far below the gradients' size: streamed in blocks
                    budget.set_value(0.5)
            ok(_submit(at, "Compute"))
        metrics = {m.label: m.value for m in at.metric}
        assert "Same class in top 8" in metrics and "Top score" in metrics
        # the bottom rows are named for what they are, per method
        assert f"{label}'s least important rows are {bottom_meaning(method)}" in texts(at)
        table = at.dataframe[-1].value
        assert set(table["role"]) <= {"proponent", "opponent", "neutral", "used", "unused", "near", "far"}
        if gradient:
            opponents, total = map(int, metrics["Opponents"].split("/"))
            assert total == 100 and opponents >= int((table["score"] < 0).sum())
            assert (table.loc[table["role"] == "opponent", "score"] < 0).all()
        if method == "simplex":
            assert "Used by SimplEx" in metrics
            assert (table.loc[table["role"] == "unused", "score"] < 1e-3 * table["score"].max()).all()
        if MODELS[name] == "ecg5000":
            assert len(charts(at)) == 2  # top and bottom beats
        else:
            assert len(at.image) == 3  # the sample tile, the top-k and the bottom-k galleries
    at.session_state["ex_tab"] = "Similarity rates"
    ok(at.run())
    if any(b.label == "Compute" for b in at.button):
        if MODELS[name] == "ecg5000":  # the LSTM's full influence matrix takes minutes on a CPU
            todo = at.multiselect(key="ex_rates_todo")
            todo.set_value([m for m in todo.value if m != "influence"])
        ok(_submit(at, "Compute"))
    spec = charts(at)[0].proto.spec
    assert "most important" in spec and "class prior" in spec
    prior = float(next(m.value for m in at.metric if m.label == "Class prior"))
    assert prior == pytest.approx(0.5 if MODELS[name] == "ecg5000" else 0.1, abs=1e-6)


def test_expensive_methods_stay_idle_in_hidden_tabs() -> None:
    at = ok(open_page("examples", dataset="mnist", model="mnist_dae_consistency",
                      xmethods=["dknn", "influence"], sample=1))
    assert [t.label for t in at.tabs][:2] == ["DKNN", "Influence Functions"]
    assert not at.get("form") or all("Influence" not in b.label for b in at.button)


# ---------------------------------------------------------------------------- missing data and models


def test_missing_dataset_shows_the_fetch_command(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LFX_DATA_DIR", str(tmp_path))
    for page in ("saliency", "masking", "examples"):
        at = open_page(page, dataset="mnist")
        assert not at.exception
        assert "python -m lfx_engine data fetch mnist" in texts(at)
    home = open_page("home")
    assert not home.exception and "python -m lfx_engine data fetch mnist" in texts(home)


def test_no_trained_model_shows_the_train_command(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LFX_CHECKPOINT_DIR", str(tmp_path))
    for page in ("saliency", "masking", "examples"):
        at = open_page(page)
        assert not at.exception
        assert "python -m lfx_engine train" in texts(at)


# ---------------------------------------------------------------------------- Explorer helpers the pages rely on


def test_explorer_sample_rows_match_the_score_matrix() -> None:
    from lfx_engine.explorer import Explorer

    explorer = Explorer(device="cpu")
    name, n = "mnist_dae_consistency", 50  # a subset size the page tests never cache
    _, test_idx = explorer.example_subsets(name, n)
    index = int(test_idx[7])
    for method in ("dknn", "cosine", "tracin"):
        assert not explorer.examples_cached(name, method, n)
        row = explorer.sample_example_scores(name, method, index, n)  # computed for this input alone
        matrix = explorer.example_scores(name, method, n)
        np.testing.assert_allclose(row, matrix[7], rtol=1e-4, atol=1e-6 * float(np.abs(matrix).max()))
    # an input outside the test subset is scored directly, and expensive rows wait for a request
    outside = next(i for i in range(500) if i not in set(test_idx.tolist()))
    assert explorer.sample_example_scores(name, "tracin", outside, n, compute=False) is None
    row = explorer.sample_example_scores(name, "tracin", outside, n)
    assert row.shape == (n,) and np.isfinite(row).all()
    ranking = explorer.example_ranking(name, row, n)
    assert list(ranking["rank"][:3]) == [1, 2, 3] and ranking["score"].is_monotonic_decreasing
    assert set(ranking["train_index"]) == set(explorer.example_subsets(name, n)[0].tolist())
    assert "autoencoder" in explorer.example_method_problem("mnist_betavae_b1_run1", "influence")
    assert explorer.example_method_problem(name, "influence") is None
    with pytest.raises(Exception, match="damp"):
        explorer.sample_example_scores(name, "influence", index, n, params={"damp": 2.0})
    with pytest.raises(Exception, match="no setting"):
        explorer.example_scores(name, "dknn", n, params={"depth": 3})
    with pytest.raises(Exception, match="hessian must be"):
        explorer.example_scores(name, "influence", n, params={"hessian": "newton"})
    with pytest.raises(Exception, match="max_memory_mb must be a positive"):
        explorer.example_scores(name, "tracin", n, params={"max_memory_mb": 0})
    # the memory budget leaves the scores unchanged, so it does not split the cache
    assert explorer.examples_cached(name, "tracin", n, params={"max_memory_mb": 1.0})
    assert explorer.examples_cached(name, "influence", n, params={"hessian": "exact", "max_memory_mb": 1.0}) == \
        explorer.examples_cached(name, "influence", n, params={"hessian": "exact"})


def test_explorer_masking_cache_round_trip_and_masked_views() -> None:
    from lfx_engine.explorer import Explorer

    explorer = Explorer(device="cpu")
    name = "mnist_dae_consistency"
    assert not explorer.masking_cached(name, ["saliency"], 12)
    summary, per_example = explorer.masking_curves(name, ["saliency"], 12)
    assert explorer.masking_cached(name, ["saliency"], 12)  # text columns reload without pickle
    again, _ = explorer.masking_curves(name, ["saliency"], 12)
    assert list(again["method"]) == list(summary["method"]) and set(summary["method"]) == {"saliency", "random"}
    assert len(per_example) == 2 * 7 * 12
    x, _ = explorer.sample(name, 0)
    views, counts, masks = explorer.masked_views(name, x, "saliency")
    assert views.shape == (7, 1, 28, 28) and counts == [0, 39, 78, 156, 392, 627, 784]
    assert float(np.abs(views[-1]).max()) == 0.0  # everything masked to the zero baseline
    # the masks say which pixels were replaced, also where a black pixel stays black
    assert masks.shape == (7, 28, 28) and masks.dtype == bool
    assert [int(m.sum()) for m in masks] == counts
    assert np.array_equal(views[3][0][~masks[3]], x[0, 0].numpy()[~masks[3]])
    assert float(np.abs(views[3][0][masks[3]]).max()) == 0.0
    assert int((masks[3] & (x[0, 0].numpy() == 0)).sum()) > 0  # masked pixels invisible in the view alone
    with pytest.raises(Exception, match="0..9999"):
        explorer.sample(name, 10_000)
    assert explorer.datasets_with_models() == ["mnist", "ecg5000"]


def test_examples_over_the_full_training_split() -> None:
    """Latent methods fit by themselves and rank all 60,000 MNIST training examples; TracIn waits for its button."""
    at = ok(open_page("examples", query={"dataset": "mnist", "model": "mnist_dae_consistency", "sample": "4",
                                         "xmethods": "dknn,tracin", "ex_scope": "full training split"}))
    assert at.selectbox(key="ex_scope").value == "full"
    assert "compared with **all 60,000** training examples" in texts(at)
    assert "Ranked against all 60,000 training examples" in texts(at)
    table = at.dataframe[-1].value
    assert len(table) == 2 * 8 and table["train_index"].max() >= 1000  # beyond any balanced subset's size
    from lfx_engine.example_importance import dknn_scores, encode
    from lfx_engine.explorer import Explorer

    explorer = Explorer(device="cpu")
    x = explorer.test_data("mnist_dae_consistency")[0][4:5]

    model = explorer.model("mnist_dae_consistency")
    dense = dknn_scores(encode(model.encoder, x), encode(model.encoder, explorer.train_data("mnist_dae_consistency")[0]))
    assert list(table["train_index"][:8]) == dense[0].topk(8).indices.tolist()  # the exact top 8 of all 60,000
    assert len(at.image) == 3
    at.session_state["ex_tab"] = "TracIn"
    ok(at.run())
    assert any(b.label == "Fit TracIn on the full training split" for b in at.button)
    assert not any("Ranked against" in c.value for c in at.caption)  # nothing fitted before the click
