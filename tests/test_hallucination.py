"""Tests for the hallucination rules and the detector's measurements (numpy only)."""

import numpy as np
import pytest
from scipy import stats

from mode_interp import hallucination
from mode_interp.data import gaussians


def _two_classes(n_in=1000, n_hal=200, seed=0, gap=10.0):
  rng = np.random.default_rng(seed)
  scores = np.concatenate([rng.random(n_in), gap + rng.random(n_hal)])
  hal = np.concatenate([np.zeros(n_in, bool), np.ones(n_hal, bool)])
  perm = rng.permutation(len(scores))
  return scores[perm], hal[perm]


def test_detection_perfect_separation():
  scores, hal = _two_classes()
  d = hallucination.detection_metrics(scores, hal)
  assert d["auroc"] == 1.0
  assert d["hallucinations_removed"] == 1.0
  assert 0.96 <= d["in_support_retained"] < 0.97
  assert d["num_in_support"] == 1000 and d["num_hallucinations"] == 200
  assert d["keep_in_support"] == 0.96
  # Samples with score <= threshold are kept: exactly what the reported fractions count.
  assert d["in_support_retained"] == np.mean(scores[~hal] <= d["threshold"])
  assert d["hallucinations_removed"] == np.mean(scores[hal] > d["threshold"])
  assert d["threshold"] in scores[~hal]  # an in-support score ("higher" quantile)
  ar = d["at_removal"]
  assert ar["remove_hallucinations"] == 0.95
  assert ar["hallucinations_removed"] >= 0.95 and ar["in_support_retained"] == 1.0


def test_detection_random_scores():
  rng = np.random.default_rng(1)
  scores = rng.random(4000)
  hal = rng.random(4000) < 0.3
  d = hallucination.detection_metrics(scores, hal)
  assert abs(d["auroc"] - 0.5) < 0.04
  assert d["in_support_retained"] >= 0.96
  # Random scores remove about as many hallucinations as in-support samples.
  assert abs(d["hallucinations_removed"] - 0.04) < 0.02
  assert abs(d["at_removal"]["in_support_retained"] - 0.05) < 0.03


@pytest.mark.parametrize("keep", [0.5, 0.8, 0.9, 0.96, 0.99])
def test_retained_at_least_keep_in_support_with_ties(keep):
  rng = np.random.default_rng(int(keep * 100))
  scores = rng.integers(0, 20, 997).astype(float)  # many ties
  hal = rng.random(997) < 0.2
  d = hallucination.detection_metrics(scores, hal, keep_in_support=keep)
  assert d["in_support_retained"] >= keep
  assert d["in_support_retained"] == np.mean(scores[~hal] <= d["threshold"])
  assert d["threshold"] in scores[~hal]
  ar = d["at_removal"]
  assert ar["hallucinations_removed"] >= 0.95
  assert ar["hallucinations_removed"] == np.mean(scores[hal] >= ar["threshold"])
  assert ar["in_support_retained"] == np.mean(scores[~hal] < ar["threshold"])


def test_detection_with_an_empty_class():
  for hal in (np.zeros(50, bool), np.ones(50, bool)):
    d = hallucination.detection_metrics(np.arange(50.0), hal)
    for k in ("auroc", "threshold", "in_support_retained", "hallucinations_removed", "at_removal"):
      assert d[k] is None, k
    assert d["num_in_support"] + d["num_hallucinations"] == 50
  d = hallucination.detection_metrics(
    np.arange(50.0), np.arange(50) > 45, remove_hallucinations=None
  )
  assert "at_removal" not in d and d["auroc"] == 1.0


def test_binomial_interval():
  for n in (1, 3, 7, 10, 1000):  # contains p, also at p = 0 and 1
    for k in sorted({0, 1, n // 3, n - 1, n}):
      lo, hi = hallucination.binomial_interval(k, n)
      assert 0.0 <= lo <= k / n <= hi <= 1.0, (k, n, lo, hi)
      assert lo < hi
  assert hallucination.binomial_interval(0, 7)[0] == 0.0
  assert hallucination.binomial_interval(10, 10)[1] == 1.0
  # Wilson interval (statsmodels' formula), checked at one point.
  lo, hi = hallucination.binomial_interval(30, 100)
  z = stats.norm.ppf(0.975)
  c = (0.3 + z**2 / 200) / (1 + z**2 / 100)
  h = z * np.sqrt(0.3 * 0.7 / 100 + z**2 / 40_000) / (1 + z**2 / 100)
  np.testing.assert_allclose([lo, hi], [c - h, c + h], rtol=1e-12)
  widths = [np.diff(hallucination.binomial_interval(n // 5, n))[0] for n in (50, 500, 5000)]
  assert widths[0] > widths[1] > widths[2] > 0
  assert (
    np.diff(hallucination.binomial_interval(20, 100, confidence=0.99))[0]
    > np.diff(hallucination.binomial_interval(20, 100, confidence=0.9))[0]
  )
  assert all(np.isnan(hallucination.binomial_interval(0, 0)))


def test_closed_forms_match_scipy_and_scikit_learn(monkeypatch):
  """The numpy forms the library uses (scipy.stats and scikit-learn cost ~2 s to import)
  give the libraries' values: Wilson intervals, midranks, AUROC (ties included), ROC points,
  nearest modes."""
  from sklearn import metrics, neighbors

  for n, k in ((1, 0), (7, 3), (10, 10), (1000, 17), (10_000, 9_999)):
    for conf in (0.9, 0.95, 0.99):
      ci = stats.binomtest(k, n).proportion_ci(conf, method="wilson")
      np.testing.assert_allclose(
        hallucination.binomial_interval(k, n, conf),
        [max(0.0, min(k / n, ci.low)), min(1.0, max(k / n, ci.high))],
        rtol=1e-10,
        atol=1e-15,
      )
    assert hallucination.normal_quantile(0.95) == pytest.approx(stats.norm.ppf(0.975), rel=1e-12)
  rng = np.random.default_rng(0)
  for scores in (rng.normal(size=500), rng.integers(0, 5, 500).astype(float)):  # ties too
    y = rng.random(500) < 0.3
    np.testing.assert_array_equal(hallucination.average_ranks(scores), stats.rankdata(scores))
    assert hallucination.auroc(y, scores) == pytest.approx(
      metrics.roc_auc_score(y, scores), rel=1e-12
    )
    fpr, tpr = hallucination.roc_curve(scores, y)
    ref_fpr, ref_tpr, _ = metrics.roc_curve(y, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr, rtol=1e-12)
    np.testing.assert_allclose(tpr, ref_tpr, rtol=1e-12)
  means = rng.normal(size=(25, 2)) * 5
  x = rng.normal(size=(3000, 2)) * 5
  monkeypatch.setattr(hallucination, "_ROWS_PER_CHUNK_ELEMENTS", 1000)  # several row chunks
  idx, dist = metrics.pairwise_distances_argmin_min(x, means)
  np.testing.assert_array_equal(hallucination.nearest_mode(x, means), idx)
  np.testing.assert_allclose(hallucination.nearest_mode_distance(x, means), dist, rtol=1e-9)
  np.testing.assert_array_equal(
    hallucination.nearest_modes(x, means, k=3),
    neighbors.NearestNeighbors(n_neighbors=3).fit(means).kneighbors(x, return_distance=False),
  )
  assert hallucination.nearest_mode(np.zeros((0, 2)), means).shape == (0,)
  assert hallucination.nearest_modes(np.zeros((0, 2)), means).shape == (0, 2)
  with pytest.raises(ValueError, match="positive and one negative"):
    hallucination.auroc(np.ones(3, bool), np.arange(3.0))


def test_filter_indices():
  tv = np.random.default_rng(0).random(100)
  keep = hallucination.filter_indices(30, "variance", traj_variance=tv)
  assert len(keep) == 30 and len(np.unique(keep)) == 30 and np.all(np.diff(keep) > 0)
  np.testing.assert_array_equal(np.sort(keep), np.sort(np.argsort(tv)[:30]))
  assert tv[keep].max() < np.delete(tv, keep).min()

  np.testing.assert_array_equal(
    hallucination.filter_indices(7, "none", num_total=100), np.arange(7)
  )
  np.testing.assert_array_equal(
    hallucination.filter_indices(7, "none", traj_variance=tv), np.arange(7)
  )

  r1 = hallucination.filter_indices(40, "random", key_seed=3, num_total=100)
  r2 = hallucination.filter_indices(40, "random", key_seed=3, num_total=100)
  r3 = hallucination.filter_indices(40, "random", key_seed=4, num_total=100)
  np.testing.assert_array_equal(r1, r2)
  assert not np.array_equal(r1, r3)
  assert len(np.unique(r1)) == 40 and r1.min() >= 0 and r1.max() < 100
  # Uniform: over many seeds every index is picked about 40% of the time.
  counts = np.zeros(100)
  for seed in range(500):
    counts[hallucination.filter_indices(40, "random", key_seed=seed, num_total=100)] += 1
  assert np.all(np.abs(counts / 500 - 0.4) < 0.1)

  assert len(hallucination.filter_indices(100, "variance", traj_variance=tv)) == 100
  with pytest.raises(ValueError, match="cannot keep"):
    hallucination.filter_indices(101, "random", num_total=100)
  with pytest.raises(ValueError, match="variance"):
    hallucination.filter_indices(10, "variance", num_total=100)
  with pytest.raises(ValueError) as e:
    hallucination.filter_indices(10, "lowest", num_total=100)
  assert "lowest" in str(e.value) and "none, random, variance" in str(e.value)


def test_rule_false_positive_rate():
  np.testing.assert_allclose(
    hallucination.rule_false_positive_rate(1, 4), 2 * (1 - stats.norm.cdf(4)), rtol=1e-9
  )
  # 2D: P(|Z| > k) = exp(-k^2 / 2).
  np.testing.assert_allclose(hallucination.rule_false_positive_rate(2, 3), np.exp(-4.5), rtol=1e-9)


def test_mixture_hallucination_rule():
  means = np.array([[1.0], [2.0], [3.0]])
  x = np.array([[1.0], [1.19], [1.21], [1.5], [2.5], [0.5], [3.1], [2.81]])
  np.testing.assert_allclose(
    hallucination.nearest_mode_distance(x, means)[:4], [0.0, 0.19, 0.21, 0.5]
  )
  np.testing.assert_array_equal(
    hallucination.mixture_hallucinations(x, means, 0.05, k=4),
    [False, False, True, True, True, True, False, False],
  )
  np.testing.assert_array_equal(hallucination.nearest_mode(x, means), [0, 0, 0, 0, 1, 0, 2, 2])
  # No samples (every sample of a generation hallucinated): empty answers, not an error.
  grid = np.zeros((25, 2))
  assert hallucination.nearest_mode(np.zeros((0, 2)), grid).shape == (0,)
  assert hallucination.nearest_mode_distance(np.zeros((0, 2)), grid).shape == (0,)


@pytest.mark.parametrize(
  "name,k", [("gaussian1d", 2.0), ("gaussian1d", 3.0), ("grid25", 2.5), ("grid25_rotated", 3.0)]
)
def test_rule_on_true_mixture_samples_matches_theory(name, k):
  mix = gaussians.make_mixture(name)
  n = 200_000
  x = mix.sample(n, seed=1)
  rate = hallucination.mixture_hallucinations(x, mix.means, mix.std, k).mean()
  p = hallucination.rule_false_positive_rate(mix.dim, k)
  assert abs(rate - p) < 4 * np.sqrt(p * (1 - p) / n)
  # The mode every sample came from (i % K) is its nearest mode.
  np.testing.assert_array_equal(
    hallucination.nearest_mode(x[:5000], mix.means), np.arange(5000) % len(mix.means)
  )
