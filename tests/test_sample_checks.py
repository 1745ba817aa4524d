"""Memorisation rate and class coverage (gud.metrics.SampleChecks): copies of training images and
samples of one class are flagged, fresh held-out data is not; and the one-class set that KCD
scores better than the Gaussian model is caught."""
import pytest
import torch

from gud import baselines
from gud.metrics import MEMORISATION_QUANTILE, SampleChecks, SampleScorer
from gud.pipeline import prepare


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    s = prepare("digits", "pixel", whitened=False, val_fraction=0.2)
    scorer = SampleScorer.train(s.train.x, s.train.labels, s.shape, x_reference=s.test.x, steps=400, seed=0,
                                cache_path=tmp_path_factory.mktemp("scorer") / "digits.pt", num_threads=1)
    return s, scorer, SampleChecks(scorer.classifier, s.shape, s.train.x, s.val.x, s.test.x)


def test_held_out_data_is_not_flagged(checks):
    s, _, c = checks
    out = c(s.test.x)
    assert out["flags"] == ""
    # the rate of fresh data is the threshold's quantile, within its binomial error
    assert abs(out["memorised"] - MEMORISATION_QUANTILE) < 3 * out["memorised_se"]
    assert out["coverage"] > 0.8


def test_training_copies_are_flagged(checks):
    s, _, c = checks
    out = c(s.train.x[:300])
    assert "memorised" in out["flags"] and out["memorised"] > 0.9


def test_one_class_is_flagged_though_kcd_likes_it(checks):
    s, scorer, c = checks
    one = s.test.x[s.test.labels == 3]
    out = c(one)
    assert "collapsed" in out["flags"] and out["coverage"] < 0.3
    assert "memorised" not in out["flags"]
    # the failure the checks exist for: KCD alone ranks this collapsed set above the Gaussian model
    gauss = scorer.score(baselines.gaussian_samples(s, 300, seed=0))
    assert scorer.score(one).kcd < gauss.kcd


def test_bad_input(checks):
    s, scorer, _ = checks
    with pytest.raises(ValueError):
        SampleChecks(scorer.classifier, s.shape, s.train.x, s.val.x[:5], s.test.x)
    with pytest.raises(ValueError):
        SampleChecks(scorer.classifier, s.shape, s.train.x, s.val.x, s.test.x)(torch.full((4, 3), float("nan")))
