"""Known-answer tests of the metrics (METHOD.md §4, §7.1–7.4, §7.6)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from lfx_engine.errors import ParameterError
from lfx_engine.metrics import (
    DisentanglementAccumulator,
    disentanglement_metrics,
    latex_table,
    mask_inputs,
    masked_pixel_correlation,
    mean_std_table,
    pooled_correlation_matrix,
    representation_shift,
    shift_curve,
    similarity_rates,
    topk_mask,
)

CPU = "cpu"


def tiny_encoder(c: int = 1, hw: int = 8, d: int = 3) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(c * hw * hw, 6), nn.Tanh(), nn.Linear(6, d)).eval()


# --------------------------------------------------------------------------- masking


def test_topk_mask_masks_exactly_m_top_features_per_example() -> None:
    scores = torch.rand(6, 1, 5, 5)
    for m in (0, 1, 7, 25):
        keep = topk_mask(scores, m)
        assert keep.shape == scores.shape
        flat_keep, flat = keep.reshape(6, -1), scores.reshape(6, -1)
        assert torch.all((flat_keep == 0).sum(1) == m)
        if 0 < m < 25:
            assert torch.all(flat[flat_keep == 0].reshape(6, m).min(1).values
                             > flat[flat_keep == 1].reshape(6, 25 - m).max(1).values)
    assert torch.equal(topk_mask(scores, fraction=0.2), topk_mask(scores, 5))
    with pytest.raises(ParameterError):
        topk_mask(scores, 26)


def test_mask_inputs_images_broadcast_over_channels_and_baseline() -> None:
    x = torch.rand(2, 3, 4, 4)
    attr = torch.randn(2, 3, 4, 4)
    agg = attr.abs().sum(1, keepdim=True)
    masked = mask_inputs(x, attr, 5)
    keep = topk_mask(agg, 5)
    torch.testing.assert_close(masked, keep * x)
    hidden = (keep == 0).expand_as(x)
    assert torch.all(masked[hidden] == 0) and torch.equal(masked[~hidden], x[~hidden])
    x_bar = torch.full((1, 3, 4, 4), 0.5)
    torch.testing.assert_close(mask_inputs(x, agg, 5, x_bar), keep * x + (1 - keep) * x_bar)


def test_mask_inputs_sequences_per_time_step() -> None:
    x = torch.rand(3, 10, 2)
    scores = torch.rand(3, 10)
    x_bar = torch.rand(1, 10, 2)
    out = mask_inputs(x, scores, 4, x_bar)
    top = scores.topk(4, dim=1).indices
    for i in range(3):
        hidden = set(top[i].tolist())
        for t in range(10):
            torch.testing.assert_close(out[i, t], x_bar[0, t] if t in hidden else x[i, t])


def test_zero_masking_gives_zero_shift_and_full_masking_matches_baseline() -> None:
    enc = tiny_encoder()
    x = torch.rand(5, 1, 8, 8)
    scores = torch.rand(5, 1, 8, 8)
    assert torch.equal(representation_shift(enc, x, mask_inputs(x, scores, 0), device=CPU), torch.zeros(5))
    full = representation_shift(enc, x, mask_inputs(x, scores, 64), batch_size=2, device=CPU)
    with torch.no_grad():
        expected = ((enc(x) - enc(torch.zeros_like(x))) ** 2).sum(1)
    torch.testing.assert_close(full, expected)


def test_shift_curve_table() -> None:
    enc = tiny_encoder()
    x = torch.rand(7, 1, 8, 8)
    attrs = {"a": torch.randn(7, 1, 8, 8), "b": torch.randn(7, 1, 8, 8)}
    table, per_ex = shift_curve(enc, x, attrs, percents=(0, 10, 50, 100), batch_size=3, device=CPU,
                                include_random=True, return_per_example=True)
    assert list(table.columns) == ["method", "percent", "M", "mean", "ci_low", "ci_high", "n"]
    assert set(table.method) == {"a", "b", "random"}
    assert table[table.method == "a"].M.tolist() == [0, 6, 32, 64]
    assert (table[table.percent == 0]["mean"] == 0).all() and (table.n == 7).all()
    assert (table.ci_low <= table["mean"]).all() and (table["mean"] <= table.ci_high).all()
    with torch.no_grad():
        full = ((enc(x) - enc(torch.zeros_like(x))) ** 2).sum(1).mean().item()
    assert np.allclose(table[table.percent == 100]["mean"], full, rtol=1e-5)
    assert len(per_ex) == 3 * 4 * 7
    grouped = per_ex.groupby(["method", "percent"])["shift"].mean()
    assert np.allclose(grouped.loc[("a", 50)], table.set_index(["method", "percent"]).loc[("a", 50), "mean"])


def test_shift_curve_sequences_use_time_steps() -> None:
    enc = nn.Sequential(nn.Flatten(), nn.Linear(20, 3)).eval()
    x = torch.rand(4, 20, 1)
    table = shift_curve(enc, x, {"m": torch.randn(4, 20, 1)}, baseline=torch.rand(1, 20, 1),
                        percents=(5, 50), device=CPU)
    assert table.M.tolist() == [1, 10]
    # per-example baselines (e.g. blurred copies) are sliced along with the batches
    x_bar = torch.rand(4, 20, 1)
    t2 = shift_curve(enc, x, {"m": torch.randn(4, 20, 1)}, baseline=x_bar, percents=(100,), batch_size=3,
                     device=CPU)
    with torch.no_grad():
        assert t2["mean"][0] == pytest.approx(((enc(x) - enc(x_bar)) ** 2).sum(1).mean().item(), rel=1e-5)


# --------------------------------------------------------------------------- similarity rates


def test_similarity_rates_known_answers() -> None:
    rng = np.random.default_rng(0)
    y_train = np.repeat(np.arange(4), 25)  # balanced, prior 0.25
    y_test = rng.integers(0, 4, size=12)
    scores = rng.normal(size=(12, 100))
    table = similarity_rates(scores, y_test, y_train)
    assert table.n.tolist() == [5, 10, 20, 50, 70, 100]
    last = table.iloc[-1]
    assert last.most == pytest.approx(0.25) and last.least == pytest.approx(0.25)
    assert last.prior == pytest.approx(0.25)
    # brute force for the other rows
    for _, row in table.iterrows():
        n = int(row.n)
        order = np.argsort(-scores, axis=1, kind="stable")
        most = np.mean([(y_train[o[:n]] == y).mean() for o, y in zip(order, y_test)])
        least = np.mean([(y_train[o[-n:]] == y).mean() for o, y in zip(order, y_test)])
        assert row.most == pytest.approx(most) and row.least == pytest.approx(least)
    # an oracle score ranks same-label examples first
    oracle = (y_test[:, None] == y_train[None, :]).astype(float) + 0.01 * rng.random((12, 100))
    t = similarity_rates(torch.tensor(oracle), torch.tensor(y_test), torch.tensor(y_train), row_chunk=5)
    assert t.most.iloc[0] == 1.0 and t.least.iloc[0] == 0.0
    assert t.most.iloc[-1] == pytest.approx(0.25)


def test_similarity_rates_intervals_and_verdicts() -> None:
    rng = np.random.default_rng(1)
    y_train = np.repeat(np.arange(4), 50)
    y_test = rng.integers(0, 4, size=200)
    oracle = (y_test[:, None] == y_train[None, :]).astype(float) + rng.random((200, 200))
    t = similarity_rates(oracle, y_test, y_train).set_index("fraction")
    assert t.loc[0.05, "most_vs_prior"] == "above" and t.loc[0.05, "least_vs_prior"] == "below"
    assert (t["most_ci_low"] <= t["most"]).all() and (t["most"] <= t["most_ci_high"]).all()
    assert t.loc[1.0, "most_vs_prior"] == "not resolved"  # identical to the prior by construction
    # brute-force t-interval of the per-example shares at 20 %
    order = np.argsort(-oracle, axis=1, kind="stable")
    shares = np.array([(y_train[o[:40]] == y).mean() for o, y in zip(order, y_test)])
    half = stats.t.ppf(0.975, len(shares) - 1) * shares.std(ddof=1) / np.sqrt(len(shares))
    assert t.loc[0.2, "most_ci_low"] == pytest.approx(shares.mean() - half)
    # scores unrelated to the labels: no verdict at 5 % (a rate near the prior is not a finding)
    noise = similarity_rates(rng.random((200, 200)), y_test, y_train).set_index("fraction")
    assert noise.loc[0.05, "most_vs_prior"] == "not resolved"


def test_similarity_rates_unbalanced_prior() -> None:
    y_train = np.array([0, 0, 0, 1])
    y_test = np.array([0, 1])
    t = similarity_rates(np.zeros((2, 4)), y_test, y_train, fractions=(1.0,))
    assert t.most[0] == pytest.approx((0.75 + 0.25) / 2) == t.least[0]


# --------------------------------------------------------------------------- correlations


def test_pooled_correlation_matrix() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((5, 3, 4, 4)).astype(np.float32)
    b = a + 0.3 * rng.random(a.shape).astype(np.float32)
    c = torch.tensor(rng.random(a.shape))
    m = pooled_correlation_matrix([a, a.copy(), b, c])
    assert m.shape == (4, 4)
    assert m[0, 1] == pytest.approx(1.0) and np.allclose(np.diag(m), 1.0)
    ref = np.corrcoef(np.stack([a.ravel(), b.ravel(), c.numpy().ravel()]))
    assert np.allclose(m[np.ix_([0, 2, 3], [0, 2, 3])], ref, atol=1e-10)
    assert pooled_correlation_matrix([a, -a])[0, 1] == pytest.approx(-1.0)
    s = pooled_correlation_matrix([a, b ** 3], method="spearman")
    assert s[0, 1] == pytest.approx(stats.spearmanr(a.ravel(), (b ** 3).ravel())[0])
    sub1 = pooled_correlation_matrix([a, b], max_elements=100, seed=3)
    sub2 = pooled_correlation_matrix([a, b], max_elements=100, seed=3)
    assert np.array_equal(sub1, sub2) and abs(sub1[0, 1] - m[0, 2]) < 0.2


def test_mean_std_table_and_latex() -> None:
    mats = [np.array([[1.0, 0.2], [0.2, 1.0]]), np.array([[1.0, 0.4], [0.4, 1.0]]), np.array([[1.0, 0.3], [0.3, 1.0]])]
    t1 = mean_std_table(mats, ["Rec", "Cls"])
    assert t1.loc["Rec", "Cls"] == f"0.30 ± {np.std([0.2, 0.4, 0.3], ddof=1):.2f}"
    assert t1.attrs["ddof"] == 1 and t1.attrs["n_runs"] == 3
    t0 = mean_std_table(mats, ["Rec", "Cls"], ddof=0)
    assert t0.loc["Cls", "Rec"] == f"0.30 ± {np.std([0.2, 0.4, 0.3]):.2f}" and t0.loc["Rec", "Rec"] == "1.00 ± 0.00"
    tex = latex_table(t0, caption="Pearson", label="tab:p")
    assert r"0.30 $\pm$ 0.08" in tex and r"\begin{tabular}{lcc}" in tex and r"\label{tab:p}" in tex


def test_two_runs_give_a_range_not_a_std() -> None:
    """A "± std" of two runs says little: below three runs the table shows the range, and the std is NaN."""
    mats = [np.array([[1.0, 0.2], [0.2, 1.0]]), np.array([[1.0, 0.4], [0.4, 1.0]])]
    table = mean_std_table(mats, ["Rec", "Cls"])
    assert table.loc["Rec", "Cls"] == "0.30 [0.20–0.40]" and np.isnan(table.attrs["std"][0][1])
    assert table.attrs["low"][0][1] == 0.2 and table.attrs["high"][0][1] == 0.4
    assert "0.30 [0.20--0.40]" in latex_table(table)
    assert mean_std_table(mats[:1], ["Rec", "Cls"]).loc["Rec", "Cls"] == "0.20"


def test_masked_pixel_correlation_ignores_dead_pixels() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((3, 1, 6, 6))
    x[:, :, :2] = 0  # dead rows
    a = rng.normal(size=x.shape)
    b = a.copy()
    b[x == 0] = rng.normal(size=int((x == 0).sum()))  # disagree only on dead pixels
    r = masked_pixel_correlation(torch.tensor(a), b, x)
    assert r.shape == (3,) and np.allclose(r, 1.0)
    c = rng.normal(size=x.shape)
    r2 = masked_pixel_correlation(a, c, x)
    live = x[0] != 0
    assert r2[0] == pytest.approx(np.corrcoef(np.abs(a[0][live]), np.abs(c[0][live]))[0, 1])
    x[1] = 0
    assert np.isnan(masked_pixel_correlation(a, c, x)[1])


# --------------------------------------------------------------------------- disentanglement


def test_identical_units() -> None:
    d = 3
    base = torch.rand(4, 1, 5, 5)
    s = base.expand(4, d, 5, 5).clone()
    out = disentanglement_metrics(s)
    assert out["pearson"] == pytest.approx(1.0)
    assert out["spearman"] == pytest.approx(1.0)
    assert out["cosine"] == pytest.approx(1.0)
    assert out["entropy"] == pytest.approx(math.log(d))
    assert out["salient_units"] == pytest.approx(0.0)


def test_one_hot_units() -> None:
    d, n = 4, 6
    owner = torch.randint(0, d, (n, 5, 5))
    s = torch.nn.functional.one_hot(owner, d).permute(0, 3, 1, 2).float() * torch.rand(n, 1, 5, 5)
    out = disentanglement_metrics(s)
    assert out["entropy"] == pytest.approx(0.0)
    assert out["salient_units"] == pytest.approx(1.0)
    assert out["cosine"] == pytest.approx(0.0)
    assert out["pearson"] < 0


def test_streaming_equals_one_shot_and_reference() -> None:
    torch.manual_seed(0)
    d = 3
    s = torch.rand(10, d, 4, 4) ** 2
    s[:, :, 0, 0] = 0  # a pixel with zero total saliency is skipped by entropy
    one = DisentanglementAccumulator()
    one.update(s)
    streamed = DisentanglementAccumulator()
    for part in torch.split(s, 3):
        streamed.update(part)
    a, b = one.compute(), streamed.compute()
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-10), k
    # reference values computed on the whole array
    x = s.double().permute(1, 0, 2, 3).reshape(d, -1).numpy()
    off = ~np.eye(d, dtype=bool)
    assert a["pearson"] == pytest.approx(np.corrcoef(x)[off].mean())
    assert a["spearman"] == pytest.approx(stats.spearmanr(x.T)[0][off].mean())
    flat = s.double().reshape(10, d, -1)
    cos = torch.nn.functional.cosine_similarity(flat[:, :, None], flat[:, None, :], dim=-1).mean(0).numpy()
    assert a["cosine"] == pytest.approx(cos[off].mean())
    tot = x.sum(0)
    p = x[:, tot > 0] / tot[tot > 0]
    assert a["entropy"] == pytest.approx(np.mean(-(p * np.log(p)).sum(0)))
    assert a["salient_units"] == pytest.approx(np.mean((p > 1 / d).sum(0)))
    # the Spearman subsample depends on positions, not on batching
    capped_one = DisentanglementAccumulator(spearman_max_pixels=50)
    capped_one.update(s)
    capped_stream = DisentanglementAccumulator(spearman_max_pixels=50)
    for part in torch.split(s, 4):
        capped_stream.update(part)
    assert not capped_one.spearman_exact
    assert capped_one.compute()["spearman"] == capped_stream.compute()["spearman"]


# --------------------------------------------------------------------------- masking controls (issue 11 §3)


def test_random_control_is_the_draw_shift_curve_always_used() -> None:
    from lfx_engine.metrics.masking_controls import control_scores

    x = torch.rand(5, 1, 8, 8)
    gen = torch.Generator().manual_seed(3)
    torch.testing.assert_close(control_scores("random", x, seed=3), torch.randn((5, 1, 8, 8), generator=gen))
    enc = tiny_encoder()
    with_flag = shift_curve(enc, x, {}, include_random=True, seed=3, device=CPU)
    explicit = shift_curve(enc, x, {"random": control_scores("random", x, seed=3)}, device=CPU)
    assert np.allclose(with_flag["mean"], explicit["mean"])


def test_informative_random_masks_only_non_baseline_features_first() -> None:
    from lfx_engine.metrics.masking_controls import control_scores, informative_features

    x = torch.zeros(4, 3, 6, 6)
    x[:, :, 1:3, 1:4] = torch.rand(4, 3, 2, 3) + 0.1  # 6 informative pixels per image
    assert informative_features(x).sum().item() == 4 * 6
    scores = control_scores("random_informative", x, seed=0)
    for m in (1, 3, 6):
        masked = mask_inputs(x, scores, m)
        # every masked pixel was informative: exactly m pixels per image went to zero
        changed = (masked != x).any(dim=1).flatten(1).sum(dim=1)
        assert (changed == m).all()
    assert (mask_inputs(x, scores, 6) == 0).all()  # all informative pixels gone at M = their count
    ecg = torch.rand(2, 10, 1)
    base = ecg[:1].clone()
    base[0, :4] += 1.0  # the first example equals the baseline on 6 time steps
    inf = informative_features(ecg, base)
    assert inf[0].sum() == 4 and inf[1].sum() == 10


def test_model_free_ranks_by_input_change() -> None:
    from lfx_engine.metrics.masking_controls import control_scores

    x = torch.rand(3, 2, 5, 5)
    x_bar = torch.rand(1, 2, 5, 5)
    expected = (x - x_bar).abs().sum(dim=1, keepdim=True)
    torch.testing.assert_close(control_scores("model_free", x, x_bar), expected)
    with pytest.raises(ParameterError, match="unknown control"):
        control_scores("random_encoder", x)


def test_area_between_curves_known_answer_and_verdicts() -> None:
    import pandas as pd

    from lfx_engine.metrics.masking_controls import area_between, curve_areas

    rng = np.random.default_rng(0)
    percents = [0, 20, 50, 100]
    rows = []
    for example in range(30):
        noise = rng.normal(0, 0.01, size=len(percents))
        for p, e in zip(percents, noise):
            share = p / 100
            rows += [{"method": "method", "percent": p, "example": example, "shift": 2 * share},
                     {"method": "line", "percent": p, "example": example, "shift": share},
                     {"method": "twin", "percent": p, "example": example, "shift": share + e}]
    areas = curve_areas(pd.DataFrame(rows))
    mean_area = areas.groupby("method")["area"].mean()
    assert mean_area["method"] == pytest.approx(1.0) and mean_area["line"] == pytest.approx(0.5)
    table = area_between(areas, ["method", "line"], ["line", "twin"]).set_index(["method", "control"])
    assert table.loc[("method", "line"), "difference"] == pytest.approx(0.5)
    assert table.loc[("method", "line"), "relative"] == pytest.approx(1.0)
    assert table.loc[("method", "line"), "verdict"] == "above"
    assert ("line", "line") not in table.index
    # the twin differs from the line by zero-mean noise only: the interval covers 0
    assert table.loc[("line", "twin"), "verdict"] == "not resolved"
    flipped = area_between(areas, ["line"], ["method"]).iloc[0]
    assert flipped["verdict"] == "below" and flipped["ci_high"] < 0


def test_randomised_copy_redraws_every_parameter_and_leaves_the_original() -> None:
    from lfx_engine.feature_importance import randomised_copy

    enc = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    with torch.no_grad():
        enc[1].weight.fill_(3.0)
        enc[1].running_mean.fill_(0.5)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    a, b = randomised_copy(enc, seed=1), randomised_copy(enc, seed=1)
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))  # seeded
    assert all(not torch.equal(p, q) for p, q in zip(a.parameters(), enc.parameters()) if p.numel() > 4)
    assert torch.equal(a[1].running_mean, torch.zeros(4)) and not a.training

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.scale

    with pytest.raises(ParameterError, match="initialiser"):
        randomised_copy(Scaled())


def test_map_agreement_of_two_importance_maps() -> None:
    from lfx_engine.metrics import map_agreement

    a = np.arange(100, dtype=float).reshape(10, 10)
    same = map_agreement(a, a * 3 + 1)
    assert same["pearson"] == pytest.approx(1.0) and same["spearman"] == pytest.approx(1.0)
    assert same["top_overlap"] == 1.0 and same["top_k"] == 10
    flipped = map_agreement(a, -a)
    assert flipped["spearman"] == pytest.approx(-1.0) and flipped["top_overlap"] == 0.0
    b = a.copy().ravel()
    b[[99, 98]] = -1  # two of a's top ten fall out of b's
    assert map_agreement(a, b)["top_overlap"] == pytest.approx(0.8)
    with pytest.raises(Exception, match="differ in size"):
        map_agreement(a, a[:5])
    with pytest.raises(Exception, match="top must lie"):
        map_agreement(a, a, top=0)
