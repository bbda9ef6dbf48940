"""Aggregate scores over runs and games (rliable): IQM, median, mean, optimality gap, 95 % bootstrap CIs.

A *score matrix* is an array `[num_runs, num_games]` (one per algorithm); *curves* are `[num_runs, num_games,
num_iterations]`. Scores are normalized in percent (see reference_scores.py), so the optimality gap's threshold is 100.

The paper's two summaries of a training curve, per run and game, before aggregating over runs x games:
  - final performance: the score of the last evaluated iteration (`final_scores`);
  - average performance over the course of training ("stability" in DR3): the mean of the per-iteration
    evaluation scores over all iterations of the run (`average_scores`). Normalization is affine, so averaging
    raw returns then normalizing gives the same number as averaging normalized scores.
  Iterations without an evaluation (NaN cells) are skipped by both.

Seeding. rliable's StratifiedBootstrap draws its resampling indices from NumPy's *global* RNG
(`np.random.choice` in `update_indices`); the `random_state` argument only reaches arch and does not make the
intervals reproducible. So each estimate here seeds the global RNG with `seed`, calls rliable, and restores the
caller's global RNG state afterwards. Every algorithm is seeded separately, so an algorithm's CI does not change
when another algorithm is added to the comparison.

CI over what. rliable's stratified bootstrap resamples runs within each game. With a single run per game that
gives a zero-width interval, so by default (`task_bootstrap=None`) games are resampled too when there is only
one run (rliable's `task_bootstrap=True`); the interval then reflects the choice of games, not seeds.
"""
import contextlib
import dataclasses
from typing import Callable, Dict, Mapping, Optional, Sequence

import numpy as np
import scipy.stats

try:
  from rliable import library as rly
except TypeError as e:  # arch (rliable's bootstrap) < 8 fails at import under pandas >= 3
  raise ImportError(
      f"rliable could not be imported: its dependency arch failed with {e!r}. rliable 1.2.0 needs arch < 8, and "
      f"arch 7.x cannot be imported with pandas >= 3; install pandas==2.3.3 (see requirements.txt).") from e
from rliable import metrics as rly_metrics  # pylint: disable=g-import-not-at-top

from batch_rl_dr3.errors import DataError

# Bootstrap replications by default (tables and curves). Measured on a 3-seed x 17-game matrix of normalized
# scores (IQM ~28 %, 95 % CI ~4.5 points wide): across bootstrap seeds the IQM CI's bounds move by a standard
# deviation of 0.10 / 0.06 points at 500 replications, 0.05 / 0.02 at 2,000, 0.03 / 0.03 at 5,000 and 0.02 / 0.01
# at 10,000 (the median's bounds jump between neighbouring order statistics: 0.1-0.2 at any count). At 2,000 the
# one-decimal CIs of the tables change by at most 0.1 between seeds, at 1/25 of the time of rliable's 50,000
# (~1 ms per replication for the four aggregates). Pass reps=50000 to match rliable's paper exactly.
DEFAULT_REPS = 2000
NORMALIZED_SCORE_OPTIMUM = 100.0  # percent of human (Atari) / expert (D4RL): the optimality gap's threshold


def iqm(scores: np.ndarray) -> float:
  """Interquartile mean over all runs x games (25 % trimmed mean of the flattened matrix)."""
  return float(rly_metrics.aggregate_iqm(scores))


def median(scores: np.ndarray) -> float:
  """Median over games of the per-game mean over runs."""
  return float(rly_metrics.aggregate_median(scores))


def mean(scores: np.ndarray) -> float:
  """Mean over games of the per-game mean over runs."""
  return float(rly_metrics.aggregate_mean(scores))


def optimality_gap(scores: np.ndarray, threshold: float = NORMALIZED_SCORE_OPTIMUM) -> float:
  """How far below `threshold` the scores fall on average, scores above it counting as `threshold`."""
  return float(rly_metrics.aggregate_optimality_gap(scores, gamma=threshold))


# Display name -> aggregate function of a [runs, games] matrix.
AGGREGATE_FUNCTIONS: Dict[str, Callable[[np.ndarray], float]] = {
    "IQM": iqm,
    "Median": median,
    "Mean": mean,
    "Optimality gap": optimality_gap,
}


@dataclasses.dataclass(frozen=True)
class IntervalEstimate:
  point: float
  lower: float
  upper: float

  def format(self, digits: int = 1) -> str:
    return f"{self.point:.{digits}f} ({self.lower:.{digits}f}, {self.upper:.{digits}f})"


@contextlib.contextmanager
def seeded_global_numpy_rng(seed: int):
  """Seed np.random (what rliable's bootstrap draws from) and restore the previous state on exit."""
  saved_state = np.random.get_state()
  np.random.seed(seed)
  try:
    yield
  finally:
    np.random.set_state(saved_state)


def _check_score_matrix(name: str, scores: np.ndarray, ndim: int) -> np.ndarray:
  scores = np.asarray(scores, dtype=np.float64)
  expected = "[num_runs, num_games]" if ndim == 2 else "[num_runs, num_games, num_iterations]"
  if scores.ndim != ndim or min(scores.shape) == 0:
    raise DataError(f"Scores of {name!r}: expected a non-empty array {expected}, got shape {scores.shape}.")
  if not np.all(np.isfinite(scores)):
    raise DataError(f"Scores of {name!r} contain NaN or inf; drop or fill the missing runs/games first.")
  return scores


def _use_task_bootstrap(scores: np.ndarray, task_bootstrap: Optional[bool]) -> bool:
  return scores.shape[0] == 1 if task_bootstrap is None else task_bootstrap


def interval_estimates(score_matrices: Mapping[str, np.ndarray],
                       aggregate: Callable[[np.ndarray], float] = iqm, *, reps: int = DEFAULT_REPS, seed: int = 0,
                       confidence: float = 0.95,
                       task_bootstrap: Optional[bool] = None) -> Dict[str, IntervalEstimate]:
  """Point estimate and stratified-bootstrap percentile CI of `aggregate`, per algorithm (rliable)."""
  estimates = {}
  for name, scores in score_matrices.items():
    scores = _check_score_matrix(name, scores, ndim=2)
    with seeded_global_numpy_rng(seed):
      points, intervals = rly.get_interval_estimates(
          {name: scores}, lambda x: np.array([aggregate(x)]), reps=reps,
          confidence_interval_size=confidence, task_bootstrap=_use_task_bootstrap(scores, task_bootstrap))
    estimates[name] = IntervalEstimate(float(np.ravel(points[name])[0]), float(intervals[name][0, 0]),
                                       float(intervals[name][1, 0]))
  return estimates


def aggregate_table(score_matrices: Mapping[str, np.ndarray],
                    aggregates: Sequence[str] = tuple(AGGREGATE_FUNCTIONS), *, reps: int = DEFAULT_REPS,
                    seed: int = 0, confidence: float = 0.95,
                    task_bootstrap: Optional[bool] = None) -> Dict[str, Dict[str, IntervalEstimate]]:
  """{aggregate name: {algorithm: IntervalEstimate}} for the named aggregates of AGGREGATE_FUNCTIONS.

  One bootstrap per algorithm evaluates all the aggregates on each replicate (as rliable's own examples do):
  the resamples depend only on the seed and the matrix shape, so every aggregate's CI equals that of a separate
  `interval_estimates` call with the same seed, at a fraction of the cost.
  """
  unknown = [a for a in aggregates if a not in AGGREGATE_FUNCTIONS]
  if unknown:
    raise ValueError(f"Unknown aggregate(s) {unknown}; expected some of {list(AGGREGATE_FUNCTIONS)}.")
  functions = [AGGREGATE_FUNCTIONS[a] for a in aggregates]
  table: Dict[str, Dict[str, IntervalEstimate]] = {a: {} for a in aggregates}
  for name, scores in score_matrices.items():
    scores = _check_score_matrix(name, scores, ndim=2)
    with seeded_global_numpy_rng(seed):
      points, intervals = rly.get_interval_estimates(
          {name: scores}, lambda x: np.array([f(x) for f in functions]), reps=reps,
          confidence_interval_size=confidence, task_bootstrap=_use_task_bootstrap(scores, task_bootstrap))
    for i, a in enumerate(aggregates):
      table[a][name] = IntervalEstimate(float(points[name][i]), float(intervals[name][0, i]),
                                        float(intervals[name][1, i]))
  return table


@dataclasses.dataclass(frozen=True)
class CurveEstimate:
  point: np.ndarray  # [num_iterations]
  lower: np.ndarray
  upper: np.ndarray


def aggregate_curve(curves: np.ndarray, aggregate: Callable[[np.ndarray], float] = iqm, *, reps: int = DEFAULT_REPS,
                    seed: int = 0, confidence: float = 0.95,
                    task_bootstrap: Optional[bool] = None, name: str = "curves") -> CurveEstimate:
  """`aggregate` at every iteration of `[runs, games, iterations]` curves, with pointwise bootstrap CIs.

  One rliable call over the 3-D array (its own idiom for sample-efficiency curves): each bootstrap replicate
  resamples runs within every (game, iteration) cell and evaluates the aggregate at every iteration.
  """
  curves = _check_score_matrix(name, curves, ndim=3)

  def per_iteration(x: np.ndarray) -> np.ndarray:
    if aggregate is iqm:  # the same trimmed mean, for all iterations in one vectorized call
      return scipy.stats.trim_mean(x.reshape(-1, x.shape[-1]), 0.25, axis=0)
    return np.array([aggregate(x[..., t]) for t in range(x.shape[-1])])

  with seeded_global_numpy_rng(seed):
    points, intervals = rly.get_interval_estimates(
        {name: curves}, per_iteration, reps=reps, confidence_interval_size=confidence,
        task_bootstrap=_use_task_bootstrap(curves, task_bootstrap))
  return CurveEstimate(np.asarray(points[name], dtype=np.float64), intervals[name][0], intervals[name][1])


def final_scores(curves: np.ndarray) -> np.ndarray:
  """Score of the last evaluated (finite) iteration, per run and game: `[..., iterations]` -> `[...]`."""
  curves = np.asarray(curves, dtype=np.float64)
  finite = np.isfinite(curves)
  num_iterations = curves.shape[-1]
  # Index of the last finite entry along the iteration axis (NaN where a curve has none).
  last = num_iterations - 1 - np.argmax(finite[..., ::-1], axis=-1)
  values = np.take_along_axis(curves, last[..., None], axis=-1)[..., 0]
  return np.where(finite.any(axis=-1), values, np.nan)


def average_scores(curves: np.ndarray) -> np.ndarray:
  """Mean over the evaluated (finite) iterations, per run and game: `[..., iterations]` -> `[...]`."""
  curves = np.asarray(curves, dtype=np.float64)
  finite = np.isfinite(curves)
  counts = finite.sum(axis=-1)
  sums = np.where(finite, curves, 0.0).sum(axis=-1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray, *, reps: int = 2000, seed: int = 0,
                               confidence: float = 0.95) -> IntervalEstimate:
  """P(X > Y) of rliable (mean over tasks of the Mann-Whitney U statistic / (n m)) for two [runs, tasks] matrices on
  the same tasks, with rliable's stratified independent bootstrap CI (seeded like the others)."""
  scores_x = _check_score_matrix("scores_x", scores_x, ndim=2)
  scores_y = _check_score_matrix("scores_y", scores_y, ndim=2)
  if scores_x.shape[1] != scores_y.shape[1]:
    raise DataError(f"probability_of_improvement: {scores_x.shape[1]} vs {scores_y.shape[1]} tasks; expected the "
                    f"same tasks in both score matrices")
  with seeded_global_numpy_rng(seed):
    points, intervals = rly.get_interval_estimates(
        {"pair": (scores_x, scores_y)}, lambda x, y: np.array([rly_metrics.probability_of_improvement(x, y)]),
        reps=reps, confidence_interval_size=confidence)
  return IntervalEstimate(float(np.ravel(points["pair"])[0]), float(intervals["pair"][0, 0]),
                          float(intervals["pair"][1, 0]))
