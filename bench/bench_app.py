"""Browser benchmark of the explorer: first render of each page and the one-sample saliency interaction.

Starts ``streamlit run app.py`` on a free port, drives Debian's chromium with
Playwright and writes ``bench/APP_RESULTS.md``. Targets (issue 4): first render of
any page under 3 s after the engine is warm, a one-sample saliency under 1 s.

* **Cold pass** (reported, not a target): each page once in a fresh server, which
  loads the engine and fills the disk caches (latents, masking curves).
* **First render** (target): a new tab (new Streamlit session, browser cache warm)
  opens the page's URL; timed from navigation until the script run is over and
  the page's main figure is visible. Median of ``--repeats`` sessions. Also
  reported: sidebar navigation between pages, and a cold browser profile.
* **Interaction** (target): on the Saliency page, click a gallery tile of a sample
  not seen before; timed from the click until the new heat maps are loaded.

Usage::

    LFX_DATA_DIR=../shared/data python bench/bench_app.py [--model mnist_dae_consistency] [--repeats 5]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "browser"))

from helpers import gallery_button, panel_images, sidebar_nav, wait_idle  # noqa: E402
from playwright.sync_api import expect, sync_playwright  # noqa: E402

CHROMIUM = os.environ.get("LFX_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
PAGES = ("home", "saliency", "masking", "examples")
#: Study pages and the shipped model each opens with (first render only; their heavy parts wait for a button).
STUDY_PAGES = {"pretext": "mnist_pretext_reconstruction_run1", "disentanglement": "mnist_betavae_b1_run1",
               "lucent": "mnist_betavae_b1_run1", "encoder-vs-full": "mnist_pretext_classification_run1"}
TIMEOUT_MS = 180_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.address",
         "127.0.0.1", "--server.port", str(port), "--server.fileWatcherType", "none",
         "--browser.gatherUsageStats", "false"],
        cwd=REPO, env={**os.environ, **env}, stdout=open(log, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"streamlit exited early; see {log}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.read().decode().strip() == "ok":
                    return proc, url
        except OSError:
            pass
        time.sleep(0.2)  # polling the server socket
    proc.terminate()
    raise SystemExit("streamlit did not become healthy in 120 s")


def page_url(base: str, page: str, dataset: str, model: str, sample: int) -> str:
    if page == "home":
        return base + "/"
    return f"{base}/{page}?dataset={dataset}&model={model}&sample={sample}"


def main_content(page, page_name: str):
    """The element that shows a page is usable: its table, heat maps, chart or galleries."""
    return {"home": page.get_by_test_id("stDataFrame"),
            "saliency": panel_images(page),
            "masking": page.get_by_test_id("stVegaLiteChart"),
            "examples": page.get_by_test_id("stImage").or_(page.get_by_test_id("stVegaLiteChart"))}.get(
        page_name, page.get_by_test_id("stImage").or_(page.get_by_test_id("stVegaLiteChart")))


def check_no_error(page, where: str) -> None:
    if page.get_by_test_id("stException").count() + page.get_by_test_id("stAlertContentError").count():
        raise RuntimeError(f"{where} shows an error")


def render(browser, url: str, page_name: str, context=None) -> float:
    """Seconds from navigation (a new Streamlit session) to the script run done and the main content visible.

    ``context=None`` uses a fresh browser context (cold browser cache: the Streamlit bundle is
    downloaded and parsed again); otherwise a new tab of ``context`` (assets already cached).
    """
    own = context is None
    context = context or browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        start = time.perf_counter()
        page.goto(url)
        expect(page.locator("h1").first).to_be_visible(timeout=TIMEOUT_MS)
        wait_idle(page, TIMEOUT_MS)
        expect(main_content(page, page_name).first).to_be_visible(timeout=TIMEOUT_MS)
        check_no_error(page, url)
        return time.perf_counter() - start
    finally:
        page.close()
        if own:
            context.close()


def navigate(browser, base: str, dataset: str, model: str, sample: int, rounds: int) -> dict[str, list[float]]:
    """Seconds from a sidebar click to the target page's main content, for each page, ``rounds`` times."""
    titles = {"home": "Home", "saliency": "Saliency", "masking": "Masking shift", "examples": "Top examples"}
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    out: dict[str, list[float]] = {name: [] for name in PAGES}
    try:
        page.goto(page_url(base, "saliency", dataset, model, sample))
        expect(panel_images(page).first).to_be_visible(timeout=TIMEOUT_MS)
        wait_idle(page, TIMEOUT_MS)
        for _ in range(rounds):
            for name in ("masking", "examples", "home", "saliency"):
                start = time.perf_counter()
                sidebar_nav(page).get_by_text(titles[name], exact=True).click()
                expect(page.locator("h1").filter(has_text=titles[name] if name != "home" else "LFX Explorer")
                       ).to_be_visible(timeout=TIMEOUT_MS)
                wait_idle(page, TIMEOUT_MS)
                expect(main_content(page, name).first).to_be_visible(timeout=TIMEOUT_MS)
                check_no_error(page, name)
                out[name].append(time.perf_counter() - start)
    finally:
        context.close()
    return out


def interaction(browser, base: str, dataset: str, model: str, samples: list[int], methods: str) -> list[float]:
    """Seconds from a gallery click to the new sample's heat maps, one click per unseen sample."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    times = []
    try:
        page.goto(f"{base}/saliency?dataset={dataset}&model={model}&methods={methods}&sample=0")
        expect(panel_images(page).first).to_be_visible(timeout=TIMEOUT_MS)
        wait_idle(page, TIMEOUT_MS)
        n_methods = len(methods.split(","))
        for index in samples:
            button = gallery_button(page, index)
            start = time.perf_counter()
            button.click()
            heading = page.get_by_role("heading").filter(has_text=f"Test sample #{index} ")
            expect(heading).to_be_visible(timeout=TIMEOUT_MS)
            images = panel_images(page)
            expect(images).to_have_count(n_methods, timeout=TIMEOUT_MS)
            images.last.locator("img").evaluate(
                "img => img.complete ? true : new Promise(r => img.addEventListener('load', () => r(true)))")
            wait_idle(page, TIMEOUT_MS)
            times.append(time.perf_counter() - start)
    finally:
        context.close()
    return times


def server_side(env: dict[str, str], dataset: str, model: str, sample: int, repeats: int) -> dict[str, list[float]]:
    """Seconds of the script run alone (Streamlit's AppTest, no browser), warm, per page and for a click."""
    os.environ.update(env)
    from streamlit.testing.v1 import AppTest

    out: dict[str, list[float]] = {}
    for name in PAGES:
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600)
        at.query_params.update({"dataset": dataset, "model": model, "sample": str(sample)})
        at.run()
        if name != "home":
            at.switch_page(f"pages/{name}.py").run()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            at.run()
            times.append(time.perf_counter() - start)
        if at.exception:
            raise RuntimeError(f"{name}: {at.exception[0].value}")
        out[name] = times
    clicks = []
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600)
    at.query_params.update({"dataset": dataset, "model": model, "sample": "0", "methods": "saliency"})
    at.run()
    at.switch_page("pages/saliency.py").run()
    for index in (14, 15, 16, 17, 18)[: max(2, repeats)]:
        start = time.perf_counter()
        at.button(key=f"sal_pick_{index}").click().run()
        clicks.append(time.perf_counter() - start)
    out["click"] = clicks
    return out


def streamlit_floor(browser, work: Path, repeats: int) -> list[float]:
    """New-tab render of a two-line Streamlit app on this machine: the framework's own floor."""
    folder = Path(tempfile.mkdtemp(prefix="hello_", dir=work))
    (folder / "app.py").write_text('import streamlit as st\nst.title("Hello")\nst.write("floor")\n')
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.address",
         "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                    if answer.read().decode().strip() == "ok":
                        break
            except OSError:
                time.sleep(0.2)  # polling the server socket
        context = browser.new_context()
        times = []
        for i in range(repeats + 1):
            page = context.new_page()
            start = time.perf_counter()
            page.goto(url)
            expect(page.locator("h1").first).to_be_visible(timeout=TIMEOUT_MS)
            wait_idle(page, TIMEOUT_MS)
            if i:  # the first visit fills the browser cache
                times.append(time.perf_counter() - start)
            page.close()
        context.close()
        return times
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        shutil.rmtree(folder, ignore_errors=True)


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--model", default="mnist_dae_consistency")
    parser.add_argument("--sample", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoints", default=os.environ.get("LFX_CHECKPOINT_DIR", str(REPO / "checkpoints")))
    parser.add_argument("--data", default=os.environ.get("LFX_DATA_DIR", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--cache", default=None,
                        help="disk cache of the run (default: a fresh folder under bench/_work, removed afterwards)")
    parser.add_argument("--out", default=str(REPO / "bench" / "APP_RESULTS.md"))
    parser.add_argument("--note", default="", help="a sentence on the conditions, added to the report")
    args = parser.parse_args()

    if not Path(CHROMIUM).exists():
        raise SystemExit(f"chromium not found at {CHROMIUM}")
    work = REPO / "bench" / "_work"
    work.mkdir(parents=True, exist_ok=True)
    fresh = None
    if args.cache is None:
        fresh = Path(tempfile.mkdtemp(prefix="app_cache_", dir=work))
        args.cache = str(fresh)
    env = {"LFX_DATA_DIR": args.data, "LFX_CHECKPOINT_DIR": args.checkpoints, "LFX_CACHE_DIR": args.cache,
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1"}
    proc, base = start_server(env, work / "bench_app_server.log")
    cold, warm = {}, {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for name in PAGES:  # cold pass: engine start-up, disk caches filled
                cold[name] = render(browser, page_url(base, name, args.dataset, args.model, args.sample), name)
                print(f"cold {name}: {cold[name]:.2f} s", flush=True)
            cold_browser = {}
            for name in PAGES:
                cold_browser[name] = render(browser, page_url(base, name, args.dataset, args.model, args.sample),
                                            name)
            shared = browser.new_context(viewport={"width": 1400, "height": 1000})
            render(browser, base + "/", "home", context=shared)  # the browser caches the app's assets once
            for name in PAGES:
                warm[name] = [render(browser, page_url(base, name, args.dataset, args.model, args.sample), name,
                                     context=shared) for _ in range(args.repeats)]
                print(f"first render {name}: {fmt(warm[name])} (cold browser {cold_browser[name]:.2f} s)",
                      flush=True)
            study_cold, study = {}, {}
            for name, model in STUDY_PAGES.items():
                url = page_url(base, name, args.dataset, model, args.sample)
                study_cold[name] = render(browser, url, name, context=shared)
                study[name] = [render(browser, url, name, context=shared) for _ in range(args.repeats)]
                print(f"first render {name}: {fmt(study[name])} (first visit {study_cold[name]:.2f} s)", flush=True)
            shared.close()
            moves = navigate(browser, base, args.dataset, args.model, args.sample, args.repeats)
            for name in PAGES:
                print(f"sidebar navigation to {name}: {fmt(moves[name])}", flush=True)
            one = interaction(browser, base, args.dataset, args.model, [4, 5, 6, 7, 8][: max(2, args.repeats)],
                              "saliency")
            print(f"interaction, Saliency only: {fmt(one)}", flush=True)
            three = interaction(browser, base, args.dataset, args.model, [9, 10, 11, 12, 13][: max(2, args.repeats)],
                                "gradient_shap,integrated_gradients,saliency")
            print(f"interaction, 3 methods: {fmt(three)}", flush=True)
            floor = streamlit_floor(browser, work, args.repeats)
            print(f"streamlit floor (two-line app, new tab): {fmt(floor)}", flush=True)
            browser.close()
        script = server_side(env, args.dataset, args.model, args.sample, args.repeats)  # same warm disk cache
        for name, values in script.items():
            print(f"script run {name}: {fmt(values)}", flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        if fresh is not None:
            shutil.rmtree(fresh, ignore_errors=True)

    load = os.getloadavg()
    lines = [
        "# App benchmark (real browser)",
        "",
        f"Measured {dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by `python bench/bench_app.py` with Debian's "
        f"chromium (Playwright), `streamlit run app.py` on {platform.machine()} / {os.cpu_count()} CPU cores, "
        f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}, load average {load[0]:.1f} at the end (the benchmark's own "
        f"browser and servers included; the machine is shared). {args.note}".rstrip(),
        f"Model `{args.model}` ({args.dataset}), sample #{args.sample}, checkpoints `{args.checkpoints}`; "
        "the disk cache starts empty.",
        "",
        "Targets (issue 4): first render of every page < 3 s once the engine is warm; one-sample saliency < 1 s.",
        "",
        "## First render per page (engine and disk caches warm)",
        "",
        "*First render*: a new tab opens the page's URL (a new Streamlit session; the browser already holds the "
        "app's static files), timed until the script run is over and the page's main figure is visible. "
        "*Sidebar navigation*: a click in the sidebar from another page, same end point. *Cold browser*: a "
        "fresh browser profile, so Streamlit's JavaScript bundle is downloaded and parsed again. *Cold pass*: "
        "the very first visit after the server started (engine start-up, disk caches filled).",
        "",
        "*Script run*: the page's Python run alone on the server (Streamlit's AppTest, no browser), the app's own "
        "share of every figure above.",
        "",
        "| page | first render (median) | min | max | sidebar navigation (median) | cold browser | cold pass "
        "| script run (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in PAGES:
        values = warm[name]
        lines.append(f"| {name} | {statistics.median(values):.2f} s | {min(values):.2f} s | {max(values):.2f} s "
                     f"| {statistics.median(moves[name]):.2f} s | {cold_browser[name]:.2f} s "
                     f"| {cold[name]:.2f} s | {statistics.median(script[name]):.2f} s |")
    for name, values in study.items():
        lines.append(f"| {name} (model `{STUDY_PAGES[name]}`) | {statistics.median(values):.2f} s "
                     f"| {min(values):.2f} s | {max(values):.2f} s | | | {study_cold[name]:.2f} s (first visit) | |")
    lines += [
        f"| *reference: a two-line Streamlit app* | {statistics.median(floor):.2f} s | {min(floor):.2f} s "
        f"| {max(floor):.2f} s | | | | |",
        "",
        "The reference row is Streamlit's own floor on this machine at the time (new tab, nothing to compute): "
        "the difference to it is what the app adds in the browser; the *script run* column is what it adds on "
        "the server.",
    ]
    lines += [
        "",
        "## One-sample saliency interaction (click a gallery tile → heat maps loaded)",
        "",
        "| methods | median | min | max | script run alone (median) |",
        "|---|---|---|---|---|",
        f"| Saliency | {statistics.median(one):.2f} s | {min(one):.2f} s | {max(one):.2f} s "
        f"| {statistics.median(script['click']):.2f} s |",
        f"| GradientShap + IG + Saliency (page default) | {statistics.median(three):.2f} s | {min(three):.2f} s "
        f"| {max(three):.2f} s | |",
        "",
        "Timing covers the browser round trip: the click, the script rerun (the attribution itself, image "
        "encoding, the gallery redraw) and the image download.",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
