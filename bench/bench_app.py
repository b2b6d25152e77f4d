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
* **App process** (issue 12 §5): seconds from launching the server to its first
  page's first text, title, page links and whole Home page (a two-line app for
  reference), and the server's RSS over ten sessions opened and closed, until it
  has given back their memory; ``--baseline-ref REF`` measures a git commit's code
  beside the working tree, ``--extra-budget MB`` the working tree under a small
  ``LFX_MEMORY_MB``, ``--only process`` this section alone.

Usage::

    LFX_DATA_DIR=../shared/data python bench/bench_app.py [--model mnist_dae_consistency] [--repeats 5]
    LFX_DATA_DIR=../shared/data python bench/bench_app.py --only process --baseline-ref HEAD
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "browser"))
sys.path.insert(0, str(REPO))

from helpers import gallery_button, panel_images, sidebar_nav, wait_idle  # noqa: E402
from lfx_ui import launch  # noqa: E402
from playwright.sync_api import expect, sync_playwright  # noqa: E402

CHROMIUM = os.environ.get("LFX_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
PAGES = ("home", "saliency", "masking", "examples")
#: Study pages and the shipped model each opens with (first render only; their heavy parts wait for a button).
STUDY_PAGES = {"pretext": "mnist_pretext_reconstruction_run1", "disentanglement": "mnist_betavae_b1_run1",
               "lucent": "mnist_betavae_b1_run1", "encoder-vs-full": "mnist_pretext_classification_run1"}
TIMEOUT_MS = 180_000


def start_server(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """The app of this checkout on a free port, healthy."""
    try:
        return launch.start(REPO, env, log)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None


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


# --------------------------------------------------------------------------- the app process (issue 12 §5)

#: Sessions of the memory figure, one browser context each (opened, drawn, closed): (page, dataset, model).
#: They cover the four datasets, models of every kind and the training splits (Top examples, Embedding).
SESSIONS = (
    ("saliency", "mnist", "mnist_dae_consistency"),
    ("saliency", "cifar10", "cifar10_dae_consistency"),
    ("saliency", "mnist", "mnist_betavae_b1_run1"),
    ("saliency", "cifar10", "cifar10_betavae_b1_run1"),
    ("saliency", "ecg5000", "ecg5000_lstm_ae"),
    ("saliency", "dsprites", "dsprites_betavae_b1_run1"),
    ("embedding", "mnist", "mnist_pretext_reconstruction_run1"),
    ("embedding", "cifar10", "cifar10_pretext_reconstruction_run1"),
    ("examples", "mnist", "mnist_dae_consistency"),
    ("examples", "cifar10", "cifar10_dae_consistency"),
)


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` (MB, from /proc)."""
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS")) / 1024


def export_tree(ref: str, work: Path) -> Path:
    """The app's files at git ``ref`` in a scratch folder (``git archive``: the working tree is not touched)."""
    folder = Path(tempfile.mkdtemp(prefix="ref_", dir=work))
    archive = subprocess.run(["git", "archive", ref], cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def launch_tree(tree: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """``streamlit run app.py`` of ``tree`` (its own packages first on the path) on a free port; not waited for."""
    return launch.launch(tree, {**env, "PYTHONPATH": str(tree)}, log)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


#: Some text of the app in the main area: the first thing a visitor sees.
MAIN_HAS_TEXT = ("() => { const m = document.querySelector(\"[data-testid='stMain']\");"
                 " return !!m && m.innerText.trim().length > 0; }")


def server_start(browser, tree: Path, env: dict[str, str], log: Path, full: bool = True) -> dict[str, float]:
    """Seconds from launching the server to: healthy, first text in the page, the home title, the whole home page.

    The browser is already running, with a fresh profile (a first visitor); it asks for the page as soon as the
    server answers its health check. ``full=False`` stops at the first text (the two-line reference app).
    """
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    start = time.perf_counter()
    proc, url = launch_tree(tree, env, log)
    try:
        launch.wait_healthy(url, proc, poll_s=0.05)
        out = {"healthy": time.perf_counter() - start}
        page.goto(url)
        page.wait_for_function(MAIN_HAS_TEXT, timeout=TIMEOUT_MS, polling=20)
        out["first content"] = time.perf_counter() - start
        if not full:
            return out
        expect(page.locator("h1").filter(has_text="LFX Explorer")).to_be_visible(timeout=TIMEOUT_MS)
        out["title"] = time.perf_counter() - start
        expect(sidebar_nav(page).get_by_text("Saliency", exact=True)).to_be_visible(timeout=TIMEOUT_MS)
        out["navigation"] = time.perf_counter() - start
        expect(page.get_by_test_id("stDataFrame").first).to_be_visible(timeout=TIMEOUT_MS)
        wait_idle(page, TIMEOUT_MS)
        check_no_error(page, "home")
        out["home complete"] = time.perf_counter() - start
        out["rss after home"] = rss_mb(proc.pid)
        return out
    finally:
        context.close()
        stop(proc)


#: Sessions that load the pages' code (captum, scikit-learn, UMAP, altair…) on the small ECG data first, so that
#: the memory figures tell the data the server gives back from the code it keeps.
WARM_UP = (("saliency", "ecg5000", "ecg5000_lstm_ae"), ("embedding", "ecg5000", "ecg5000_lstm_ae"),
           ("examples", "ecg5000", "ecg5000_lstm_ae"))


def visit(browser, url: str, name: str, dataset: str, model: str) -> None:
    """One session: a new browser context opens the page, waits until it is drawn, and is closed."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        page.goto(page_url(url, name, dataset, model, 3))
        expect(page.locator("h1").first).to_be_visible(timeout=TIMEOUT_MS)
        wait_idle(page, TIMEOUT_MS)
        # any figure (the ECG page draws its maps as charts): the page has computed what it shows
        shown = page.get_by_test_id("stDataFrame") if name == "home" else page.get_by_test_id("stImage").or_(
            page.get_by_test_id("stVegaLiteChart"))
        expect(shown.first).to_be_visible(timeout=TIMEOUT_MS)
        check_no_error(page, f"{name} {model}")
    finally:
        context.close()


def session_memory(browser, tree: Path, env: dict[str, str], log: Path, settle_s: float) -> dict[str, float]:
    """Server RSS (MB): started, after one Home visit, once the pages' code is loaded (WARM_UP, then
    ``settle_s``), at the peak of len(SESSIONS) sessions opened and closed one after the other (each a new
    browser context on another model), right after the last closed, and ``settle_s`` later."""
    proc, url = launch_tree(tree, env, log)
    try:
        launch.wait_healthy(url, proc, poll_s=0.05)
        out = {"started": rss_mb(proc.pid)}
        visit(browser, url, "home", "", "")
        out["one home visit"] = rss_mb(proc.pid)
        for name, dataset, model in WARM_UP:
            visit(browser, url, name, dataset, model)
        time.sleep(settle_s)  # what the warm-up sessions held goes back (or not)
        out["code loaded"] = rss_mb(proc.pid)
        peak = 0.0
        for i, (name, dataset, model) in enumerate(SESSIONS, 1):
            visit(browser, url, name, dataset, model)
            peak = max(peak, rss_mb(proc.pid))
            print(f"  session {i}: {name} {model}: RSS {rss_mb(proc.pid):.0f} MB", flush=True)
        out["peak"] = peak
        out["all closed"] = rss_mb(proc.pid)
        time.sleep(settle_s)  # the sessions are over: what the server gives back on its own, untouched
        out["settled"] = rss_mb(proc.pid)
        return out
    finally:
        stop(proc)


def process_figures(browser, env: dict[str, str], work: Path, trees: dict[str, Path], repeats: int,
                    settle_s: float, reference: Path | None = None) -> dict[str, dict[str, Any]]:
    """Start-up and memory figures of each tree ("before" = a git ref, "after" = the working tree).

    With ``reference`` (a two-line app's folder), each start of a tree is followed by one of the reference app,
    so that both see the same load on the shared machine; its figures go to ``out[REFERENCE]``.
    """
    out: dict[str, dict[str, Any]] = {}
    for label, tree in trees.items():
        log = work / f"bench_start_{label.split()[0]}.log"
        starts = []
        for _ in range(repeats):
            starts.append(server_start(browser, tree, env, log))
            if reference is not None:
                out.setdefault(REFERENCE, {"start": []})["start"].append(
                    server_start(browser, reference, env, work / "bench_start_reference.log", full=False))
        for row in starts:
            print(f"{label} start: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
        memory = session_memory(browser, tree, env, work / f"bench_memory_{label.split()[0]}.log", settle_s)
        print(f"{label} memory: " + ", ".join(f"{k} {v:.0f} MB" for k, v in memory.items()), flush=True)
        out[label] = {"start": starts, "memory": memory}
    return out


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
    proc, url = launch.launch(folder, {})
    try:
        launch.wait_healthy(url, proc, timeout=60)
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
    parser.add_argument("--only", choices=("all", "process"), default="all",
                        help="process: only the server start-up and session-memory figures; the 'App process' "
                             "section of --out is replaced and the rest of the file kept")
    parser.add_argument("--baseline-ref", default=None,
                        help="also measure the app process of this git ref (exported with git archive) as 'before'")
    parser.add_argument("--starts", type=int, default=3, help="server starts timed per code version")
    parser.add_argument("--settle", type=float, default=45.0,
                        help="seconds to wait after the last session closed before the last RSS reading")
    parser.add_argument("--memory-mb", default=None, help="LFX_MEMORY_MB of the servers (default: the app's)")
    parser.add_argument("--extra-budget", type=float, default=512,
                        help="also run the sessions of the working tree under this LFX_MEMORY_MB (0: not)")
    parser.add_argument("--extra-release", type=float, default=5,
                        help="LFX_RELEASE_AFTER_S of that extra run")
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
    if args.memory_mb:
        env["LFX_MEMORY_MB"] = str(args.memory_mb)
    process = measure_process(args, env, work)
    if args.only == "process":
        if fresh is not None:
            shutil.rmtree(fresh, ignore_errors=True)
        out = Path(args.out)
        text = out.read_text() if out.exists() else "# App benchmark (real browser)\n"
        out.write_text(replace_section(text, process_lines(process, args, env)))
        print(f"updated the App process section of {args.out}")
        return
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
    Path(args.out).write_text("\n".join(lines) + "\n" + process_lines(process, args, env))
    print(f"wrote {args.out}")


PROCESS_HEADING = "## App process: server start and memory (issue 12 §5)"
REFERENCE = "*reference: a two-line Streamlit app*"
PROCESS_NOTE = (
    '`LFX_MEMORY_MB` bounds what the engine keeps between requests (models, dataset splits, their '
    "resizes, fitted indices; least recently used out first). The RSS adds the code (the *pages' code "
    'loaded* column), what the running request computes, and the page variables of sessions still open or'
    ' closed less than `LFX_RELEASE_AFTER_S` ago (default 30 s); once that delay has passed, the server '
    "closes the ended sessions, empties their pages' variables and returns the freed memory to the "
    'system.')


def measure_process(args, env: dict[str, str], work: Path) -> dict[str, dict[str, Any]]:
    """The App process figures of the working tree, and of ``--baseline-ref`` first when given."""
    trees = {}
    if args.baseline_ref:
        trees[f"before (`{args.baseline_ref}`)"] = export_tree(args.baseline_ref, work)
    trees["after (working tree)" if args.baseline_ref else "working tree"] = REPO
    caches = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            hello = Path(tempfile.mkdtemp(prefix="hello_", dir=work))
            caches.append(hello)
            (hello / "app.py").write_text('import streamlit as st\nst.title("Hello")\nst.write("floor")\n')
            out: dict[str, dict[str, Any]] = {REFERENCE: {"start": []}}
            for label, tree in trees.items():
                cache = Path(tempfile.mkdtemp(prefix="process_cache_", dir=work))  # each version starts empty
                caches.append(cache)
                figures = process_figures(browser, {**env, "LFX_CACHE_DIR": str(cache)}, work, {label: tree},
                                          args.starts, args.settle, reference=hello)
                out[REFERENCE]["start"] += figures.pop(REFERENCE)["start"]
                out.update(figures)
            if args.extra_budget:
                label = (f"{'after' if args.baseline_ref else 'working tree'}, `LFX_MEMORY_MB={args.extra_budget:g}`, "
                         f"`LFX_RELEASE_AFTER_S={args.extra_release:g}`")
                cache = Path(tempfile.mkdtemp(prefix="process_cache_", dir=work))
                caches.append(cache)
                memory = session_memory(browser, REPO, {**env, "LFX_CACHE_DIR": str(cache),
                                                        "LFX_MEMORY_MB": f"{args.extra_budget:g}",
                                                        "LFX_RELEASE_AFTER_S": f"{args.extra_release:g}"},
                                        work / "bench_memory_budget.log", args.settle)
                print(f"{label} memory: " + ", ".join(f"{k} {v:.0f} MB" for k, v in memory.items()), flush=True)
                out[label] = {"start": [], "memory": memory}
            print(f"reference start: {out[REFERENCE]['start']}", flush=True)
            browser.close()
        return out
    finally:
        for folder in caches + [t for t in trees.values() if t != REPO]:
            shutil.rmtree(folder, ignore_errors=True)


def process_lines(process: dict[str, dict[str, Any]], args, env: dict[str, str]) -> str:
    """The App process section (markdown)."""
    load = os.getloadavg()
    budget = env.get("LFX_MEMORY_MB", "unset (the app's default)")
    lines = [
        PROCESS_HEADING,
        "",
        f"Measured {dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by `python bench/bench_app.py"
        f"{' --only process' if args.only == 'process' else ''}"
        f"{f' --baseline-ref {args.baseline_ref}' if args.baseline_ref else ''}` on {platform.machine()} / "
        f"{os.cpu_count()} CPU cores, OMP_NUM_THREADS={env['OMP_NUM_THREADS']}, LFX_MEMORY_MB={budget}, load "
        f"average {load[0]:.1f} at the end (the machine is shared). {args.note}".rstrip(),
        "",
        "Targets (issue 12 §5): the first page shows something within 2 s of the server start; the server's "
        "memory stays under a configurable budget and is given back when sessions end.",
        "",
        "*Server start*: seconds from launching `streamlit run app.py` (chromium already running, a fresh "
        "profile: a first visitor) until the server answers its health check, the page shows its first text "
        "(whatever the app draws first; a loading notice counts), the home page's title, the sidebar's page "
        "links, and the whole home page (its tables drawn, the script "
        f"run over); median of {args.starts} starts (min–max), then the server's RSS after that first visit. "
        "Each start is followed by one of the two-line reference app (its own row), so that both see the same load "
        "on the shared machine; the reference row's difference to ours is what the app adds.",
        "",
        "| code | healthy | first content | home title | page links | home complete | RSS after home |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, figures in process.items():
        rows = figures["start"]
        if not rows:
            continue
        cells = []
        for key in ("healthy", "first content", "title", "navigation", "home complete"):
            values = [row[key] for row in rows if key in row]
            cells.append(f"{statistics.median(values):.2f} s ({min(values):.2f}–{max(values):.2f})" if values else "")
        rss = [row["rss after home"] for row in rows if "rss after home" in row]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {f'{statistics.median(rss):.0f} MB' if rss else ''} |")
    lines += [
        "",
        f"*Sessions*: a fresh server and one Home visit; then Saliency, Embedding and Top examples on the small "
        f"ECG5000 model, so that the pages' code (captum, scikit-learn, UMAP, altair…) is loaded, and "
        f"{args.settle:.0f} s; then {len(SESSIONS)} sessions one after the other, each a new browser context "
        "that opens one page on another model and is closed once the page is drawn: "
        + ", ".join(f"{page} `{model}`" for page, _, model in SESSIONS)
        + f". Server RSS (MB) when started, after Home, with the pages' code loaded, at its peak, right after "
        f"the last session closed and {args.settle:.0f} s later; the last column is what stays above the "
        "code-loaded figure (data the sessions left behind).",
        "",
        "| code | started | Home | pages' code loaded | peak | all sessions closed | "
        f"{args.settle:.0f} s later | left behind |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, figures in process.items():
        if "memory" not in figures:
            continue
        m = figures["memory"]
        lines.append(f"| {label} | {m['started']:.0f} | {m['one home visit']:.0f} | {m['code loaded']:.0f} "
                     f"| {m['peak']:.0f} | {m['all closed']:.0f} | {m['settled']:.0f} "
                     f"| {m['settled'] - m['code loaded']:+.0f} |")
    lines += ["", PROCESS_NOTE]
    return "\n".join(lines) + "\n"


def replace_section(text: str, section: str) -> str:
    """``text`` with its App process section replaced by ``section`` (appended when it has none)."""
    start = text.find(PROCESS_HEADING)
    if start < 0:
        return text.rstrip("\n") + "\n\n" + section
    end = text.find("\n## ", start + len(PROCESS_HEADING))
    return text[:start] + section + (text[end + 1:] if end >= 0 else "")


if __name__ == "__main__":
    main()
