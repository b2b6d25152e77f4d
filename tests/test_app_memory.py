"""The app process (issue 12 §5): one memory budget over models, datasets and indices, memory given back when
sessions end, and a first page that needs no engine.

Real shipped checkpoints and the real datasets (MNIST, ECG5000, CIFAR-10 test split).
"""
from __future__ import annotations

import ast
import gc
import json
import os
import subprocess
import sys
import weakref

import pytest

from apptest_helpers import ok, open_page
from conftest import REPO_ROOT, real_data_dir
from lfx_engine.data import splits as data_splits

MB = 2 ** 20
DAE, ECG, VAE, CIFAR = ("mnist_dae_consistency", "ecg5000_lstm_ae", "mnist_betavae_b1_run1",
                        "cifar10_dae_consistency")


@pytest.fixture
def shipped(monkeypatch, tmp_path) -> dict[str, str]:
    """The shipped zoo on the real data, a private disk cache, a fresh split cache."""
    data = real_data_dir()
    assert data is not None, "these tests need the real datasets (LFX_DATA_DIR or ../shared/data)"
    env = {"LFX_DATA_DIR": str(data), "LFX_CHECKPOINT_DIR": str(REPO_ROOT / "checkpoints"),
           "LFX_CACHE_DIR": str(tmp_path / "cache"), "LFX_DEVICE": "cpu"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from lfx_ui import sessions

    # an app run earlier in this process left its engine's janitor sweeping the process-wide split cache; with
    # LFX_RELEASE_AFTER_S=0 it would give back this test's splits every 0.2 s (a CI run failed that way)
    sessions.stop_all_janitors()
    data_splits.clear_cache()  # splits of this test only: nothing else holds them
    yield env
    data_splits.clear_cache()


def _explorer():
    from lfx_engine.explorer import Explorer

    return Explorer(device="cpu")


def _request(explorer, name: str) -> None:
    """What a page asks for one model: a test input and the model."""
    explorer.sample(name, 0)
    explorer.model(name)


def _keys(explorer) -> set[tuple]:
    return {(item.kind, item.key) for item in explorer.held()}


def test_one_budget_covers_models_datasets_and_resizes_least_recently_used_out_first(shipped, monkeypatch) -> None:
    explorer = _explorer()
    monkeypatch.setenv("LFX_MEMORY_MB", "160")
    budget = 160 * MB
    for name in (DAE, ECG, VAE):  # MNIST test split, the ECG splits, the MNIST split resized to 32×32: ~75 MB
        _request(explorer, name)
        assert explorer.held_bytes() <= budget
    kinds = {kind for kind, _ in _keys(explorer)}
    assert kinds == {"model", "split", "resized"}  # datasets and their resizes count, beside the models
    assert ("split", ("mnist", "test")) in _keys(explorer) and ("split", ("ecg5000", "examples_test")) in _keys(
        explorer)
    assert explorer.held_bytes() == sum(item.nbytes for item in explorer.held()) > 60 * MB
    _request(explorer, DAE)  # DAE's model and the MNIST test split are the newest again
    before = {(item.kind, item.key): item for item in explorer.held()}

    _request(explorer, CIFAR)  # +120 MB: over the budget, the least recently used go first
    after = _keys(explorer)
    evicted = [before[key] for key in before if key not in after]
    kept = [before[key] for key in before if key in after]
    assert evicted and explorer.held_bytes() <= budget
    assert ("split", ("cifar10", "test")) in after
    if kept:  # everything evicted was used before everything kept
        assert max(item.last_used for item in evicted) <= min(item.last_used for item in kept)
    assert ("split", ("ecg5000", "examples_test")) not in after  # the oldest dataset left memory
    assert not any(c.dataset == "ecg5000" for c in data_splits.cached_splits())


def test_a_request_keeps_its_own_model_and_data_over_a_tiny_budget(shipped, monkeypatch) -> None:
    explorer = _explorer()
    _request(explorer, ECG)
    monkeypatch.setenv("LFX_MEMORY_MB", "1")  # smaller than one MNIST split
    _request(explorer, VAE)
    held = _keys(explorer)
    assert ("split", ("mnist", "test")) in held and ("resized", ("mnist", "test")) in held
    models = [key for kind, key in held if kind == "model"]
    assert len(models) == 1 and models[0].startswith(f"{VAE}@")
    assert not any(kind == "split" and key[0] == "ecg5000" for kind, key in held)  # the older request's went
    x, label = explorer.sample(VAE, 3)  # no reload loop: the same objects serve the request
    assert tuple(x.shape) == (1, 1, 32, 32) and explorer.test_data(VAE)[0] is explorer.test_data(VAE)[0]


def test_memory_goes_back_when_the_sessions_that_used_it_end(shipped) -> None:
    explorer = _explorer()
    explorer.bind_user("A")
    _request(explorer, DAE)
    mnist_x = weakref.ref(explorer.test_data(DAE)[0])
    explorer.bind_user("B")
    _request(explorer, ECG)
    explorer.bind_user(None)
    assert explorer.release(0, active_users=["A", "B"]) == 0  # both sessions open: nothing goes
    assert explorer.release(3600, active_users=[]) == 0  # used a moment ago: kept for the grace delay

    freed = explorer.release(0, active_users=["B"])  # A ended
    assert freed > 25 * MB
    assert all("B" in item.users for item in explorer.held())
    assert not any(c.dataset == "mnist" for c in data_splits.cached_splits())
    gc.collect()
    assert mnist_x() is None  # nothing else kept the split: its memory is free

    assert explorer.release(0, active_users=[]) > 0
    assert explorer.held() == [] and explorer.held_bytes() == 0
    _request(explorer, DAE)  # and it loads again on demand
    assert ("split", ("mnist", "test")) in _keys(explorer)


def test_a_sample_does_not_keep_its_split_alive(shipped) -> None:
    explorer = _explorer()
    x, _ = explorer.sample(DAE, 5)
    split = explorer.test_data(DAE)[0]
    assert x.untyped_storage().nbytes() < split.untyped_storage().nbytes() / 1000  # a copy, not a view
    assert explorer.test_data(DAE)[0][5:6].equal(x)


RSS_SCRIPT = """
import json, os
from lfx_engine.explorer import Explorer

def rss():
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS")) / 1024

explorer = Explorer(device="cpu")
explorer.bind_user("session")
explorer.model("mnist_dae_consistency")
base = rss()
explorer.train_data("mnist_dae_consistency"), explorer.sample("mnist_dae_consistency", 0)
loaded = rss()
freed = explorer.release(0, active_users=[]) / 2 ** 20
print(json.dumps({"base": base, "loaded": loaded, "after": rss(), "freed": freed}))
"""


def test_given_back_memory_leaves_the_process(shipped) -> None:
    """The process's resident memory drops by what the engine gave back (freed pages go back to the system)."""
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **shipped, "OMP_NUM_THREADS": "1"}, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    grown = figures["loaded"] - figures["base"]
    assert figures["freed"] > 200 and grown > 150  # the MNIST training and test splits: 210 MB
    assert figures["after"] - figures["base"] < 0.25 * grown, figures


PIN_SCRIPT = """
import ctypes, json, os
from lfx_engine.explorer import pin_mmap_threshold

def rss():
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS")) / 1024

pinned = pin_mmap_threshold()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
big = libc.malloc(64 * 2 ** 20)
libc.free(big)  # unpinned, this raises glibc's threshold to 32 MB, and 16 MB blocks then come from the heap
base = rss()
blocks = [libc.malloc(16 * 2 ** 20) for _ in range(8)]
for block in blocks:
    ctypes.memset(block, 1, 16 * 2 ** 20)
for block in blocks[:-1]:
    libc.free(block)  # the last block stays: the heap below it cannot shrink
print(json.dumps({"pinned": pinned, "left": rss() - base}))
"""


@pytest.mark.parametrize("pin", [True, False])
def test_the_pinned_mmap_threshold_gives_large_blocks_back(pin: bool) -> None:
    """Freed large blocks leave the process only with the threshold pinned (glibc's dynamic rise otherwise)."""
    env = {**os.environ}
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    if not pin:
        env["MALLOC_MMAP_THRESHOLD_"] = str(32 * 2 ** 20)  # as glibc's rise leaves it; pin_mmap_threshold yields
    out = subprocess.run([sys.executable, "-c", PIN_SCRIPT], capture_output=True, text=True, timeout=120, env=env,
                         cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["pinned"] is pin
    if pin:
        assert figures["left"] < 40, figures  # only the block still in use (16 MB)
    else:
        assert figures["left"] > 100, figures  # 7 freed blocks of 16 MB held under the live one


# ------------------------------------------------------------------------------------------- the sessions' janitor
def test_the_janitor_closes_ended_sessions_and_gives_back_what_only_they_used(shipped, monkeypatch) -> None:
    from lfx_ui import sessions

    monkeypatch.setenv("LFX_RELEASE_AFTER_S", "0")
    monkeypatch.setattr(sessions, "_PAGES", {})  # the page namespaces of this test's sessions only
    explorer = _explorer()
    open_sessions = {"A": True, "B": True}
    closed, idle = [], []
    janitor = sessions.SessionJanitor(explorer, is_active=open_sessions.get, close=closed.append,
                                      on_idle=lambda: idle.append(True))
    for session, name in (("A", DAE), ("B", ECG)):
        explorer.bind_user(session)
        janitor.seen(session)
        _request(explorer, name)
    # A's page variables are made while A's script runs, bound to A, as in the app
    explorer.bind_user("A")
    page = {"x_all": explorer.test_data(DAE)[0], "explorer": explorer}
    explorer.bind_user(None)
    sessions.remember_page(page, session="A")
    assert janitor.sweep() == 0 and not closed

    open_sessions["A"] = False  # A's tab was closed
    assert janitor.sweep() > 25 * MB
    assert closed == ["A"] and page == {} and "A" not in sessions.page_sessions()  # its page variables went
    assert janitor.sessions() == {"B"} and all("B" in item.users for item in explorer.held()) and not idle

    open_sessions["B"] = False
    janitor.sweep()
    assert closed == ["A", "B"] and explorer.held() == [] and idle == [True]  # no session left: caches emptied


def test_stop_all_janitors_stops_every_started_thread() -> None:
    from lfx_ui import sessions

    janitor = sessions.SessionJanitor(_explorer(), is_active=lambda s: True, close=lambda s: None)
    janitor.start()
    thread = janitor._thread
    assert thread is not None and thread.is_alive()
    sessions.stop_all_janitors()
    assert not thread.is_alive()


def test_the_janitor_waits_the_release_delay_and_forgives_a_reconnect(shipped, monkeypatch) -> None:
    from lfx_ui import sessions

    monkeypatch.setenv("LFX_RELEASE_AFTER_S", "3600")
    monkeypatch.setattr(sessions, "_PAGES", {})
    explorer = _explorer()
    state = {"A": True}
    closed: list[str] = []
    janitor = sessions.SessionJanitor(explorer, is_active=state.get, close=closed.append, on_idle=lambda: None)
    explorer.bind_user("A")
    janitor.seen("A")
    _request(explorer, DAE)
    state["A"] = False
    assert janitor.sweep() == 0 and not closed and explorer.held()  # within the delay: a reload finds it all
    state["A"] = True  # reconnected
    janitor.sweep()
    assert janitor.sessions() == {"A"} and not closed
    assert sessions.check_every_s() == sessions.CHECK_EVERY_S
    monkeypatch.setenv("LFX_RELEASE_AFTER_S", "bad")
    assert sessions.release_after_s() == sessions.DEFAULT_RELEASE_AFTER_S


def test_the_janitor_thread_is_stopped_and_joined_before_the_interpreter_exits(tmp_path) -> None:
    """A check under way when the process exits finishes before finalisation (a daemon thread killed inside torch's
    frees aborted a CI run once Ray was loaded); ``stop`` ends the thread."""
    done = tmp_path / "done"
    code = f"""
import os, time
os.environ["LFX_RELEASE_AFTER_S"] = "0"
from lfx_ui import sessions

class SlowExplorer:
    def release(self, unused_for, active_users):
        time.sleep(1.0)
        open({str(done)!r}, "a").write("swept\\n")
        return 0

janitor = sessions.SessionJanitor(SlowExplorer(), is_active=lambda s: None, close=lambda s: None,
                                  on_idle=lambda: None)
janitor.start()
time.sleep(0.5)  # the first check (after 0.2 s) is sleeping inside release when the script ends
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert done.read_text().splitlines() == ["swept"]  # finished, and no check started after the exit began

    from lfx_ui import sessions

    class Quick:
        def release(self, unused_for, active_users):
            return 0

    janitor = sessions.SessionJanitor(Quick(), is_active=lambda s: None, close=lambda s: None, on_idle=lambda: None)
    janitor.start()
    janitor.stop()
    assert janitor._thread is not None and not janitor._thread.is_alive()


# ------------------------------------------------------------------------------------------------- the first page
def test_the_router_and_the_first_page_need_no_engine() -> None:
    """app.py's imports and Home's first lines load neither torch nor the engine (seconds on a fresh server)."""
    code = ("import sys, lfx_ui.router, lfx_ui.state, lfx_ui.report, lfx_ui.jobs, lfx_ui.sessions, lfx_ui.safe; "
            "print([m for m in ('torch', 'captum', 'pandas', 'numpy', 'lfx_engine') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
    imported = set()
    for node in ast.parse((REPO_ROOT / "app.py").read_text()).body:
        if isinstance(node, ast.ImportFrom):
            imported |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
    assert imported <= {"__future__.annotations", "importlib", "sys", "streamlit", "lfx_ui.report", "lfx_ui.router",
                        "lfx_ui.state", "lfx_ui.jobs.stopped_notice"}, imported
    # Home: the title, the introduction and the page links come before the first import of the engine
    body = ast.parse((REPO_ROOT / "pages" / "home.py").read_text()).body
    first_heavy = next(i for i, node in enumerate(body) if isinstance(node, ast.With))
    light = [n for n in body[:first_heavy] if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert {getattr(n, "module", None) or n.names[0].name for n in light} <= {"__future__", "streamlit", "lfx_ui"}
    drawn = ast.unparse(ast.Module(body=body[:first_heavy], type_ignores=[]))
    assert "st.title('LFX Explorer')" in drawn and "page_link" in drawn
    assert "st.spinner" in ast.unparse(body[first_heavy])


def test_home_loads_no_model_and_no_dataset(shipped) -> None:
    from lfx_ui.engine import get_explorer

    get_explorer().release()  # whatever earlier tests of this process left
    at = ok(open_page("home", timeout=120))
    assert at.title[0].value == "LFX Explorer" and at.dataframe
    assert get_explorer().held() == []  # the catalogue and the dataset table only
