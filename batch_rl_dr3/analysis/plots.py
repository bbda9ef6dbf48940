"""PNG plots of a report (matplotlib, Agg backend): aggregate learning curves and per-game diagnostics.

  - `plot_aggregate_curves`: IQM normalized score vs gradient steps, one line per label with its 95 %
    stratified-bootstrap band (the paper's Fig. 4). Iterations where some run has no evaluation are skipped.
  - `plot_metric_per_env`: a train/* column (feature dot product as in Fig. 1/5, srank, ...) vs gradient steps,
    one panel per game/task, per label the mean over runs with a band from the lowest to the highest run.
  - `plot_metrics_by_env`: several columns (rows) x games (columns), the same lines: the paper's Fig. 1 (dot
    products and average Q of the four backups).
"""
import math
from typing import Dict, List, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from batch_rl_dr3.analysis import aggregate
from batch_rl_dr3.analysis.runs import Run

_COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def _color(i: int) -> str:
  return _COLORS[i % len(_COLORS)]


def plot_aggregate_curves(curves: Dict[str, np.ndarray], gradient_steps: Dict[str, np.ndarray], title: str,
                          path: str, *, reps: int, seed: int, ylabel: str = "IQM human-normalized score (%)"
                          ) -> None:
  """curves: label -> normalized [runs, games, iterations]; gradient_steps: label -> [iterations]."""
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for i, (label, c) in enumerate(curves.items()):
    evaluated = np.all(np.isfinite(c), axis=(0, 1))
    if not evaluated.any():
      continue
    estimate = aggregate.aggregate_curve(c[..., evaluated], reps=reps, seed=seed, name=label)
    x = gradient_steps[label][evaluated]
    ax.plot(x, estimate.point, color=_color(i), label=label, marker="o" if len(x) < 20 else None, ms=3)
    ax.fill_between(x, estimate.lower, estimate.upper, color=_color(i), alpha=0.2, linewidth=0)
  ax.set_xlabel("gradient steps")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _grid(n: int) -> Tuple[int, int]:
  cols = min(4, n)
  return int(math.ceil(n / cols)), cols


def _spans_orders_of_magnitude(ax) -> bool:
  values = np.concatenate([line.get_ydata() for line in ax.get_lines()] or [np.array([])])
  return values.size > 0 and values.min() > 0 and values.max() / values.min() > 100


def _draw_metric(ax, runs_by_label: Dict[str, Dict[str, List[Run]]], env: str, column: str) -> None:
  """One panel: `column` of `env` vs gradient steps, per label the mean over runs, band lowest to highest run."""
  for i, (label, by_env) in enumerate(runs_by_label.items()):
    env_runs = [r for r in by_env.get(env, []) if r.has_finite(column)]
    if not env_runs:
      continue
    length = min(r.num_iterations for r in env_runs)  # common prefix, as in the tables
    values = np.stack([r.column(column)[:length] for r in env_runs])
    x = env_runs[0].gradient_steps[:length]
    keep = np.all(np.isfinite(values), axis=0)
    if not keep.any():
      continue
    values, x = values[:, keep], x[keep]
    ax.plot(x, values.mean(axis=0), color=_color(i), label=f"{label} ({len(env_runs)})")
    if len(env_runs) > 1:
      ax.fill_between(x, values.min(axis=0), values.max(axis=0), color=_color(i), alpha=0.2, linewidth=0)
  if _spans_orders_of_magnitude(ax):
    ax.set_yscale("log")  # dot products grow by orders of magnitude without DR3 (the paper's Fig. 1)
  ax.grid(alpha=0.3)
  ax.tick_params(labelsize=7)


def _envs_with(runs_by_label: Dict[str, Dict[str, List[Run]]], columns: Sequence[str],
               envs: Sequence[str]) -> List[str]:
  envs = list(envs) or sorted({env for by_env in runs_by_label.values() for env in by_env})
  return [e for e in envs if any(r.has_finite(c) for c in columns for by_env in runs_by_label.values()
                                 for r in by_env.get(e, []))]


def plot_metric_per_env(runs_by_label: Dict[str, Dict[str, List[Run]]], column: str, title: str, path: str,
                        *, envs: Sequence[str] = ()) -> bool:
  """runs_by_label: label -> env -> runs. Returns False (and writes nothing) if no run has the column."""
  envs = _envs_with(runs_by_label, [column], envs)
  if not envs:
    return False
  rows, cols = _grid(len(envs))
  fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
  for ax, env in zip(axes.flat, envs):
    _draw_metric(ax, runs_by_label, env, column)
    ax.set_title(env, fontsize=9)
  for ax in list(axes.flat)[len(envs):]:
    ax.set_visible(False)
  axes.flat[0].legend(fontsize=7)
  fig.supxlabel("gradient steps")
  fig.supylabel(column)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return True


def plot_metrics_by_env(runs_by_label: Dict[str, Dict[str, List[Run]]], metrics: Sequence[Tuple[str, str]],
                        title: str, path: str, *, envs: Sequence[str] = ()) -> bool:
  """A grid: one row per (column, y label) of `metrics`, one column per game/task, one line per label.

  The DR3 paper's Fig. 1 is `metrics = [('train/dot_product', ...), ('train/q_data', ...)]` over the four
  backups. Returns False (and writes nothing) if no run has any of the columns.
  """
  envs = _envs_with(runs_by_label, [c for c, _ in metrics], envs)
  if not envs:
    return False
  fig, axes = plt.subplots(len(metrics), len(envs), figsize=(3.8 * len(envs), 2.9 * len(metrics)),
                           squeeze=False)
  for row, (column, ylabel) in enumerate(metrics):
    for col, env in enumerate(envs):
      ax = axes[row, col]
      _draw_metric(ax, runs_by_label, env, column)
      if row == 0:
        ax.set_title(env, fontsize=10)
      if col == 0:
        ax.set_ylabel(ylabel, fontsize=8)
      if row == len(metrics) - 1:
        ax.set_xlabel("gradient steps", fontsize=8)
  axes[0, 0].legend(fontsize=7)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return True
