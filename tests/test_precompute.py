"""``lfx precompute``: tiles, sinks, and the Ray executor's results equal to the local executor's.

A local Ray cluster (``ray.init(num_cpus=2)``) runs the same tiles as this process; every array must be equal
(floating-point ones to float32 rounding).
Runs on the tiny real zoo (the real MNIST data, a 2-epoch autoencoder with two TracIn checkpoints).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from lfx_engine.cli import main
from lfx_engine.errors import ParameterError
from lfx_engine.example_importance import index as ix
from lfx_engine.precompute import Job, LocalExecutor, plan, precompute

MODEL = "mnist_dae_consistency"
JOBS = {
    "attributions": Job(MODEL, "attributions", ("saliency", "gradient_shap"), n_test=24, test_block=10),
    "masking": Job(MODEL, "masking", ("integrated_gradients",), n_test=16, test_block=8),
    "examples": Job(MODEL, "examples", ("tracin",), n_test=12, n_train=150, test_block=5, train_block=60),
}


@pytest.fixture(autouse=True)
def env(tiny_app_env):
    return tiny_app_env


@pytest.fixture(scope="module")
def ray_executor(tiny_zoo):
    """One local Ray cluster for the module (2 CPUs, started with the tiny zoo's settings)."""
    import os

    from lfx_engine.precompute import RayExecutor

    saved = {key: os.environ.get(key) for key in tiny_zoo}
    os.environ.update(tiny_zoo)
    os.environ["OMP_NUM_THREADS"] = "1"
    executor = RayExecutor(num_cpus=2)
    try:
        yield executor
    finally:
        executor.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_plan_covers_every_row_column_and_checkpoint_once() -> None:
    tiles = plan(JOBS["examples"])
    assert len(tiles) == 3 * 3 * 2  # 12 test rows in blocks of 5, 150 training examples in 60s, two checkpoints
    cover = np.zeros((12, 150, 2), dtype=int)
    for t in tiles:
        cover[t.test_start:t.test_stop, t.train_start:t.train_stop, t.checkpoint] += 1
    assert (cover == 1).all()
    assert len({t.seed for t in tiles}) == len(tiles)
    with pytest.raises(ParameterError, match="SimplEx"):
        plan(Job(MODEL, "examples", ("simplex",), n_train=100, train_block=50))
    with pytest.raises(ParameterError, match="one method"):
        plan(Job(MODEL, "examples", ("dknn", "cosine")))
    with pytest.raises(ParameterError, match="--what"):
        Job(MODEL, "everything", ("dknn",))


@pytest.mark.parametrize("what, sink", [(what, "dense") for what in JOBS] + [("examples", "topk")])
def test_ray_executor_equals_the_local_executor(what: str, sink: str, ray_executor) -> None:
    job = JOBS[what]
    local = precompute(job, LocalExecutor(), sink=sink, k=4)
    remote = precompute(job, ray_executor, sink=sink, k=4)
    assert set(local.arrays) == set(remote.arrays) and local.arrays
    for key, value in local.arrays.items():
        other = remote.arrays[key]
        if value.dtype.kind in "fc":
            # the same seeds and tiles give the same numbers up to float32 rounding: a BLAS kernel can round the
            # last bit differently in another process (memory alignment picks the code path)
            np.testing.assert_allclose(other, value, rtol=1e-5, atol=1e-6 * float(np.abs(value).max()),
                                       err_msg=key)
        else:
            assert np.array_equal(value, other), key
    assert len(remote.tile_seconds) == len(plan(remote.job)) and all(s > 0 for s in remote.tile_seconds)
    if what == "attributions":
        assert local.arrays["attr_saliency"].shape == (24, 1, 28, 28)
    if what == "masking":
        assert set(local.arrays["method"]) == {"integrated_gradients", "random"}
        assert sorted(set(local.arrays["example"])) == list(range(16))


def test_example_tiles_add_up_to_the_full_index_and_feed_every_sink(tmp_path) -> None:
    from lfx_engine.explorer import Explorer

    job = JOBS["examples"]
    dense = precompute(job, LocalExecutor(), sink="dense").arrays["scores"]
    explorer = Explorer(device="cpu")
    fitted = ix.fit("tracin", explorer.model(MODEL), explorer.train_data(MODEL)[0][:150],
                    checkpoints=explorer.method_checkpoints(MODEL, "tracin"), params=explorer.index_params(MODEL, "tracin"))
    whole = fitted.score(explorer.test_data(MODEL)[0][:12])
    # each tile quantises its own block to float16 (its own scale): equal to float16 precision
    np.testing.assert_allclose(dense, whole, rtol=2e-2, atol=2e-3 * np.abs(whole).max())
    # top-k tiles sum both checkpoints themselves and send back 4 columns per row, not their 60
    topk_result = precompute(job, LocalExecutor(), sink="topk", k=4)
    assert len(topk_result.tile_seconds) == 3 * 3 and topk_result.job.top_k == 4
    top = topk_result.arrays
    assert np.array_equal(np.sort(top["top_indices"], axis=1),  # merged over the three training blocks
                          np.sort(np.argsort(-dense, axis=1, kind="stable")[:, :4], axis=1))
    assert np.allclose(top["top_scores"], -np.sort(-dense, axis=1)[:, :4], rtol=1e-5, atol=1e-7)
    assert np.allclose(top["bottom_scores"], np.sort(dense, axis=1)[:, :4])
    from lfx_engine.precompute.tiles import run_tile

    one = run_tile(topk_result.job, plan(topk_result.job)[1])  # the second training block: columns 60..119
    assert set(one) == {"top_scores", "top_indices", "bottom_scores", "bottom_indices"}
    assert one["top_indices"].shape == (5, 4) and one["top_indices"].min() >= 60 and one["top_indices"].max() < 120
    shards = precompute(job, LocalExecutor(), sink="shards", out=tmp_path / "run").shards
    assert len(shards) == 3 and np.array_equal(ix.read_shards(shards), dense)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["tiles"] == len(plan(job))


def test_influence_blocks_share_the_whole_split_solve() -> None:
    """Every training block of an IF precompute is scored with the one Gauss–Newton solve of the whole split."""
    from lfx_engine.explorer import Explorer

    params = {"recursion_depth": 3, "minibatch_size": 20, "projection_dim": 64}
    job = Job(MODEL, "examples", ("influence",), n_test=6, n_train=120, test_block=6, train_block=60, params=params)
    dense = precompute(job, LocalExecutor(), sink="dense").arrays["scores"]
    explorer = Explorer(device="cpu")
    settings = explorer.index_params(MODEL, "influence", params)
    x_all, x_test = explorer.train_data(MODEL)[0], explorer.test_data(MODEL)[0][:6]
    model = explorer.model(MODEL)
    whole = ix.fit("influence", model, x_all[:120], params=settings, hessian_data=x_all)
    assert whole.arrays["solve_0"].shape[0] == whole.arrays["features_0"].shape[1]
    expected = whole.score(x_test)
    np.testing.assert_allclose(dense, expected, rtol=2e-2, atol=2e-3 * np.abs(expected).max())
    assert np.array_equal(explorer.influence_solve(MODEL, params), whole.arrays["solve_0"])
    # a block's own Hessian would be another estimate
    own = ix.fit("influence", model, x_all[:120], params=settings).score(x_test)
    assert not np.allclose(own, expected, rtol=1e-4, atol=0)


def test_cli_writes_the_results_and_refuses_bad_arguments(tmp_path, capsys) -> None:
    out = tmp_path / "attr"
    assert main(["precompute", MODEL, "--what", "attributions", "--methods", "saliency", "--n-test", "12",
                 "--test-block", "5", "--out", str(out)]) == 0
    assert "3 tiles on local" in capsys.readouterr().out
    with np.load(out / "attributions.npz", allow_pickle=False) as data:  # plain arrays, no pickle
        assert data["attr_saliency"].shape == (12, 1, 28, 28)
    assert main(["precompute", MODEL, "--what", "examples", "--methods", "simplex", "--n-train", "100",
                 "--train-block", "50", "--out", str(tmp_path / "s")]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["precompute", MODEL, "--what", "examples", "--methods", "telepathy",
                 "--out", str(tmp_path / "t")]) == 2
