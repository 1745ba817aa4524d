"""The verdict protocol (gud.protocol) and the error bars behind it (gud.stats), branch by branch,
on synthetic inputs whose answer is known."""
import math

import numpy as np
import pytest

from gud import protocol as P
from gud.stats import Evidence, image_estimate, paired_difference, score_estimate


# ----------------------------------------------------------------------------- the four tests

@pytest.mark.parametrize("diff, se, verdict", [
    (-0.5, 0.1, P.HOLDS), (0.5, 0.1, P.FAILS), (-0.1, 0.1, P.INCONCLUSIVE), (0.0, 0.0, P.INCONCLUSIVE)])
def test_superiority(diff, se, verdict):
    assert P.superiority(diff, se).verdict == verdict


@pytest.mark.parametrize("diff, se, margin, verdict", [
    (0.001, 0.002, 0.02, P.HOLDS),          # inside the margin with room for both one-sided tests
    (-0.001, 0.002, 0.02, P.HOLDS),
    (0.0, 0.02, 0.02, P.INCONCLUSIVE),      # no difference, but too noisy: never "holds" on its own
    (0.015, 0.005, 0.02, P.INCONCLUSIVE),   # inside the margin, but not by 1.645 SE
    (0.1, 0.01, 0.02, P.FAILS),             # outside the margin beyond its error
    (-0.1, 0.01, 0.02, P.FAILS),
    (0.025, 0.01, 0.02, P.INCONCLUSIVE),    # outside, but within error of the margin
])
def test_equivalence(diff, se, margin, verdict):
    assert P.equivalence(diff, se, margin).verdict == verdict


def test_no_significant_difference_is_not_holds():
    """The issue's example: 2.61 ± 0.006 vs 2.61 ± 0.006 is inconclusive under a 0.005 margin and
    holds only where the margin is wide enough for the interval."""
    se = math.hypot(0.006, 0.006)
    assert P.superiority(0.0, se).verdict == P.INCONCLUSIVE
    assert P.equivalence(0.0, se, 0.005).verdict == P.INCONCLUSIVE
    assert P.equivalence(0.0, se, 0.02).verdict == P.HOLDS


def test_equivalence_needs_a_margin():
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="margin"):
            P.equivalence(0.0, 0.01, bad)


@pytest.mark.parametrize("d1, d2, verdict", [
    (-0.5, 0.5, P.HOLDS), (0.5, -0.5, P.HOLDS), (-0.5, -0.5, P.FAILS), (0.5, 0.5, P.FAILS),
    (-0.5, 0.05, P.INCONCLUSIVE), (0.0, 0.0, P.INCONCLUSIVE)])
def test_opposite_ranking(d1, d2, verdict):
    assert P.opposite_ranking(d1, 0.1, d2, 0.1).verdict == verdict


def test_trend():
    up = [(0.5, 0.1)] * 4
    assert P.trend(up, (2.0, 0.1)).verdict == P.HOLDS                                   # monotone
    assert P.trend([(-0.5, 0.1), (-0.5, 0.1), (0.5, 0.1)], (1.0, 0.1)).verdict == P.HOLDS  # one turn
    zigzag = [(0.5, 0.1), (-0.5, 0.1), (0.5, 0.1)]
    assert P.trend(zigzag, (0.5, 0.1)).verdict == P.FAILS                              # two reversals
    flat = [(0.01, 0.1)] * 4
    assert P.trend(flat, (0.05, 0.1)).verdict == P.INCONCLUSIVE                        # flat within error
    # insignificant wiggles between significant steps of one sign are not reversals
    assert P.trend([(0.5, 0.1), (-0.05, 0.1), (0.5, 0.1)], (1.0, 0.1)).verdict == P.HOLDS


@pytest.mark.parametrize("fn, args", [
    (P.superiority, (0.1, math.nan)), (P.equivalence, (0.1, math.nan, 0.02)),
    (P.opposite_ranking, (0.1, 0.1, 0.1, math.nan)), (P.trend, ([(0.1, math.nan)], (0.1, 0.1)))])
def test_missing_standard_error_is_not_assessable(fn, args):
    out = fn(*args)
    assert out.verdict == P.NOT_ASSESSABLE and "standard error" in out.reason


# ----------------------------------------------------------------------------- combining, gates

def test_combine():
    h, f, i = P.Outcome(P.HOLDS, "equivalence"), P.Outcome(P.FAILS, "equivalence"), P.Outcome(P.INCONCLUSIVE, "x")
    assert P.combine([h, h]).verdict == P.HOLDS
    assert P.combine([f, f]).verdict == P.FAILS
    assert P.combine([h, f]).verdict == P.INCONCLUSIVE                   # mixed evidence
    assert P.combine([h, i]).verdict == P.INCONCLUSIVE
    legs = [P.Outcome(P.HOLDS, "equivalence", "bits/dim +0.01"), P.Outcome(P.FAILS, "equivalence", "KCD +0.3")]
    assert P.combine(legs).evidence == f"bits/dim +0.01 [{P.HOLDS}]; KCD +0.3 [{P.FAILS}]"  # mixed: each leg's verdict
    assert P.combine(legs[:1] * 2).evidence == "bits/dim +0.01; bits/dim +0.01"
    na = P.not_assessable("equivalence", "network at the cap")
    out = P.combine([h, na])
    assert out.verdict == P.NOT_ASSESSABLE and out.reason == "network at the cap"
    with pytest.raises(ValueError):
        P.combine([])


def test_gate():
    assert P.gate(converged={"net": True}, beats={"net vs Gaussian": True}) == ""
    assert "step cap" in P.gate(converged={"net": False}, beats={})
    assert P.gate(converged={}, beats={"net: samples memorised": False}) == "samples flagged: net: samples memorised"
    assert "step cap" in P.gate(converged={"net": None}, beats={})      # unknown convergence fails
    assert "closed-form baseline" in P.gate(converged={"net": True}, beats={"net vs full Gaussian": False})
    out = P.guarded(P.Outcome(P.HOLDS, "superiority", "e"), P.gate(converged={"net": False}, beats={}))
    assert out.verdict == P.NOT_ASSESSABLE and out.evidence == "e"
    assert P.guarded(P.Outcome(P.HOLDS, "superiority"), "").verdict == P.HOLDS


def test_select_uses_validation_values():
    val = {0.4: 2.0, 1.0: 2.1, 1.6: math.nan}
    assert P.select([0.4, 1.0, 1.6], val.get) == 0.4
    with pytest.raises(ValueError):
        P.select([1.6], val.get)


def test_score_margin():
    assert P.score_margin(1.0, 0.0) == pytest.approx(P.SCORE_MARGIN_FRACTION)
    assert math.isnan(P.score_margin(0.0, 0.1))


# ----------------------------------------------------------------------------- error bars

def test_image_estimate_one_seed_is_the_se_over_images():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 0.5, size=(1, 400))
    m, se = image_estimate(x)
    assert m == pytest.approx(x.mean()) and se == pytest.approx(x.std(ddof=1) / 20)


def test_paired_difference_removes_the_shared_image_variation():
    """Two models on the same images: per-image difficulty is shared, so the paired SE is the SE of
    the small per-image differences, far below the unpaired one; and it is calibrated: over many
    test sets, the spread of the difference matches the reported SE within 15 %."""
    rng = np.random.default_rng(1)
    diffs, ses = [], []
    for _ in range(400):
        hard = rng.normal(3.0, 0.5, size=200)                 # image difficulty
        a = hard + rng.normal(0.0, 0.05, size=200)
        b = hard + 0.01 + rng.normal(0.0, 0.05, size=200)
        d, se = paired_difference(a[None], b[None])
        diffs.append(d)
        ses.append(se)
    assert np.std(diffs) == pytest.approx(np.mean(ses), rel=0.15)
    assert np.mean(ses) < 0.2 * image_estimate(a[None])[1]  # 0.05*sqrt(2) vs 0.5 per image
    assert np.mean(diffs) == pytest.approx(-0.01, abs=3 * np.std(diffs) / 20)


def test_seeds_add_their_spread():
    rng = np.random.default_rng(2)
    hard = rng.normal(3.0, 0.5, size=300)
    seeds = np.stack([hard + off for off in (0.0, 0.1, 0.2)])       # training noise: seed offsets
    _, se1 = image_estimate(seeds[:1])
    _, se3 = image_estimate(seeds)
    assert se3 > 0.05                                                # the seed spread 0.1/sqrt(3) counts
    assert se3 == pytest.approx(math.hypot(se1, 0.1 / math.sqrt(3)), rel=0.02)
    with pytest.raises(ValueError, match="same images"):
        paired_difference(seeds, seeds[:, :10])


def test_score_estimate():
    assert score_estimate([0.3], [0.05]) == pytest.approx((0.3, 0.05))
    m, se = score_estimate([0.2, 0.4], [0.0, 0.0])
    assert m == pytest.approx(0.3) and se == pytest.approx(0.1)


def test_evidence_selection_and_drivers():
    n = 50
    rng = np.random.default_rng(3)
    hard = rng.normal(3.0, 0.3, size=n)
    rows, arrays = [], {}
    for model, recon in (("x", 1.0), ("y", 1.5)):
        for seed in (0, 1):
            rid = f"{model}/{seed}"
            rows.append({"id": rid, "dataset": "d", "model": model, "a": 1.0, "seed": seed, "converged": True,
                         "score": 0.1 * seed, "score_se": 0.01})
            diffusion = hard - 1.0 + 0.001 * seed
            arrays[f"per_image/{rid}"] = np.stack([diffusion + recon, 0 * hard, diffusion, recon + 0 * hard])
    E = Evidence(rows, arrays)
    d, se = E.diff("bpd", dict(model="x"), dict(model="y"))
    assert d == pytest.approx(-0.5) and se < 1e-2
    assert E.driver(dict(model="x"), dict(model="y")).startswith("reconstruction term")
    assert E.converged(model="x") is True
    assert E.converged(model="nothing") is None
    rows[0].pop("converged")
    assert Evidence(rows, arrays).converged(model="x") is None       # missing convergence: unknown
    assert E.score(model="x") == pytest.approx((0.05, math.hypot(math.hypot(0.01, 0.01) / 2, 0.05)))


# ----------------------------------------------------------------------------- the gates and selection in use

def _evidence(net_shift: float, full_shift: float, val_best: tuple, n: int = 400):
    """Per-image bits/dim of a family network on a (a, r) grid, of the Gaussian model at the same
    points, and of the full-covariance Gaussian; the network's validation values make
    ``val_best`` the best point, its test values make another point best."""
    rng = np.random.default_rng(5)
    hard = rng.normal(3.0, 0.4, size=n)
    rows, arrays = [], {}

    def add(model, a, r, seed, total, val=None, converged=True):
        rid = f"{model}/{a}/{r}/{seed}"
        row = {"id": rid, "dataset": "d", "model": model, "a": a, "r": r, "seed": seed, "score": 0.1,
               "score_se": 0.01, "score_val": 0.1, "score_val_se": 0.01, "flags": ""}
        if model != "gaussian":
            row["converged"] = converged
        rows.append(row)
        per = hard + total + rng.normal(0, 0.01, size=n)
        arrays[f"per_image/{rid}"] = np.stack([per, 0 * per, per - 1, 1 + 0 * per])
        if val is not None:
            row["bpd_val"], row["bpd_val_se"] = float((hard + val).mean()), 0.02

    for a, r in [(1.0, 0.0), (0.4, 1.0)]:
        best = (a, r) == val_best
        add("family", a, r, 0, net_shift + (0.0 if (a, r) == (0.4, 1.0) else 0.002), val=-0.5 if best else 0.0)
        add("gaussian", a, r, None, 0.0)
        add("gaussian_full", a, r, None, full_shift)  # the full-covariance Gaussian in the same process
    rows.append({"id": "full", "dataset": "d", "model": "full_gaussian"})  # its exact density: not the gate's
    arrays["per_image/full"] = np.stack([hard - 5.0] + [np.full(n, np.nan)] * 3)
    info = {"score_full_gaussian": 1.0, "score_full_gaussian_se": 0.01, "score_gaussian": 1.0, "score_real": 0.0}
    return Evidence(rows, arrays), info


def test_strongest_baseline_gate():
    """In bits/dim a network must beat the Gaussian model of its basis and the full-covariance
    Gaussian driven through the same process (row ``gaussian_full``, paired over test images); the
    full Gaussian's exact density (row ``full_gaussian``, 5 bits/dim lower here) does not enter."""
    E, info = _evidence(net_shift=-0.2, full_shift=-0.5, val_best=(1.0, 0.0))
    sel = dict(dataset="d", model="family", a=1.0, r=0.0)
    beats = P.network_gate(E, info, sel, dict(dataset="d", model="gaussian", a=1.0, r=0.0), "bpd", "net")
    d, e = E.bpd_diff(sel, dict(dataset="d", model="gaussian_full", a=1.0, r=0.0))
    assert d == pytest.approx(0.302, abs=5 * e)  # -0.2 + 0.002 - (-0.5), within the noise of 400 images
    assert beats == {"net vs the Gaussian model (bits/dim)": True,   # beats the weak one only
                     f"net vs the full-covariance Gaussian in the same process (bits/dim {d:+.3f} ± {e:.3f})": False}
    assert "full-covariance Gaussian in the same process" in P.gate(converged={"net": True}, beats=beats)
    E, info = _evidence(net_shift=-0.7, full_shift=-0.5, val_best=(1.0, 0.0))
    beats = P.network_gate(E, info, sel, dict(dataset="d", model="gaussian", a=1.0, r=0.0), "bpd", "net")
    assert all(beats.values()) and P.gate(converged={"net": True}, beats=beats) == ""
    E.rows[0]["flags"] = "collapsed"
    beats = P.network_gate(E, info, sel, dict(dataset="d", model="gaussian", a=1.0, r=0.0), "score", "net")
    assert beats["net: samples collapsed"] is False


def test_gate_without_the_full_gaussian_row_fails_and_says_so():
    """A result without the in-process full-covariance Gaussian (computed by earlier code) cannot
    pass the gate: the reason says the baseline was not computed."""
    E, info = _evidence(net_shift=-0.7, full_shift=-0.5, val_best=(1.0, 0.0))
    E.rows = [r for r in E.rows if r["model"] != "gaussian_full"]
    beats = P.network_gate(E, info, dict(dataset="d", model="family", a=1.0, r=0.0),
                           dict(dataset="d", model="gaussian", a=1.0, r=0.0), "bpd", "net")
    assert beats["net vs the full-covariance Gaussian in the same process (bits/dim; not computed)"] is False
    assert P.gate(converged={"net": True}, beats=beats) == (
        "closed-form baseline not computed for this result: net vs the full-covariance Gaussian in the same "
        "process (bits/dim; not computed)")
    assert P.network_gate(E, info, dict(dataset="d", model="family", a=1.0, r=0.0),  # Gaussian data: left out
                          dict(dataset="d", model="gaussian", a=1.0, r=0.0), "bpd", "net",
                          full_gaussian=False) == {"net vs the Gaussian model (bits/dim)": True}


def test_e2_claim_selects_on_validation_and_judges_on_test():
    from gud.experiments import e2

    cfg = {"datasets": ["d"], "a_eval": [0.4, 1.0], "r_eval": [0.0, 1.0]}
    for val_best, word in (((0.4, 1.0), "(0.4, 1)"), ((1.0, 0.0), "(1, 0)")):
        E, info = _evidence(net_shift=-0.7, full_shift=-0.5, val_best=val_best)
        # grid points without rows are NaN on validation and never chosen
        metrics = {"rows": E.rows, "datasets": {"d": {**info, "source": "d"}}}
        c = e2.claims(cfg, metrics, E.arrays)[0]
        assert f"best (a, r) on the validation split = {word}" in c["evidence"]
        assert c["verdict"] in (P.HOLDS, P.NOT_ASSESSABLE, P.INCONCLUSIVE)
        assert c["test"] == "equivalence"


def test_convergence_rule():
    from gud.pipeline import TrainedNet

    def net(steps, stopped, cap):
        return TrainedNet(None, steps, None, 0.0, 0.0, 0.0, stopped_early=stopped, max_steps=cap)

    assert net(1200, True, 3000).converged()          # early stopping before the cap
    assert net(3000, True, 3000).converged()          # patience ran out at the last evaluation: flattened
    assert not net(3000, False, 3000).converged()     # at the cap, still improving within its patience
    assert not net(800, False, 3000).converged()      # stopped by a budget, not by its loss
