"""PNG plots of a report (matplotlib, Agg backend): aggregate learning curves and per-game diagnostics.

  - `plot_aggregate_curves`: IQM normalized score vs gradient steps, one line per label with its 95 %
    stratified-bootstrap band (the paper's Fig. 4). Iterations where some run has no evaluation are skipped.
  - `plot_metric_per_env`: a train/* column (feature dot product as in Fig. 1/5, srank, ...) vs gradient steps,
    one panel per game/task, per label the mean over runs with a band from the lowest to the highest run.
  - `plot_metrics_by_env`: several columns (rows) x games (columns), the same lines: the paper's Fig. 1 (dot
    products and average Q of the four backups).
"""
import math
import textwrap
from typing import Callable, Dict, List, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import matplotlib.ticker  # pylint: disable=g-import-not-at-top
import numpy as np

from batch_rl_dr3.analysis import aggregate
from batch_rl_dr3.analysis.runs import Run

# Sized for a paper: saved at DPI dots per inch, at most PAGE_WIDTH inches wide, fonts of 7-10 pt, so a figure
# placed at its saved size (e.g. \includegraphics without scaling) reads like the text around it.
DPI = 200
PAGE_WIDTH = 7.0
_FONTS = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
          "legend.fontsize": 7, "legend.title_fontsize": 7, "figure.titlesize": 9}
_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")  # Okabe-Ito
_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
# Column -> axis label in words (with its unit) for the metrics the report plots.
COLUMN_LABELS = {
    "train/dot_product": r"feature dot product $\phi(s,a)^\top\phi(s',a')$",
    "train/srank": r"srank of the features ($\delta$ = 0.01), dimensions",
    "train/fixed_batch/q_data": "average Q(s,a) on a fixed batch (return units)",
    "train/q_data": "average Q(s,a) over the batch (return units)",
    "eval/return": "evaluation return (episode score)",
    "eval/normalized_score": "normalized score (%)",
}


def column_label(column: str) -> str:
  """An axis label in words for a metrics column (its name without prefix and underscores when unknown)."""
  return COLUMN_LABELS.get(column, column.split("/")[-1].replace("_", " "))


def _style(i: int, num_points: int) -> Dict[str, object]:
  """Color, line style and marker of the i-th label. Markers sit at different points for each label, so two
  identical curves still show both (one's markers between the other's)."""
  every = max(1, num_points // 8)
  return {"color": _COLORS[i % len(_COLORS)], "linestyle": _LINESTYLES[i % len(_LINESTYLES)],
          "marker": _MARKERS[i % len(_MARKERS)], "markevery": ((i * max(1, every // 4)) % every, every),
          "markersize": 3.5, "linewidth": 1.3}


def _color(i: int) -> str:
  return _COLORS[i % len(_COLORS)]


def _steps_scale(max_steps: float) -> Tuple[float, str]:
  """Tick scale and axis label of a gradient-step axis: millions or thousands of steps when that many."""
  if max_steps >= 1e6:
    return 1e6, "gradient steps (millions)"
  if max_steps >= 1e4:
    return 1e3, "gradient steps (thousands)"
  return 1.0, "gradient steps"


def _steps_axis(ax, max_steps: float, label: bool = True) -> None:
  scale, text = _steps_scale(max_steps)
  ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / scale:g}"))
  if label:
    ax.set_xlabel(text)


def _run_counts(counts: List[int]) -> str:
  low, high = min(counts), max(counts)
  return f"{low} run{'s' if high > 1 else ''}" if low == high else f"{low}-{high} runs"


def plot_aggregate_curves(curves: Dict[str, np.ndarray], gradient_steps: Dict[str, np.ndarray], title: str,
                          path: str, *, reps: int, seed: int, ylabel: str = "IQM human-normalized score (%)",
                          on_curve: Callable[[str], None] = lambda label: None) -> None:
  """curves: label -> normalized [runs, games, iterations]; gradient_steps: label -> [iterations].
  `on_curve(label)` is called after each label's bootstrap (progress)."""
  with plt.rc_context(_FONTS):
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH * 0.6, 2.9))
    max_steps = 0.0
    for i, (label, c) in enumerate(curves.items()):
      evaluated = np.all(np.isfinite(c), axis=(0, 1))
      if not evaluated.any():
        continue
      estimate = aggregate.aggregate_curve(c[..., evaluated], reps=reps, seed=seed, name=label)
      on_curve(label)
      x = gradient_steps[label][evaluated]
      max_steps = max(max_steps, float(x[-1]))
      ax.plot(x, estimate.point, label=f"{label} ({c.shape[0]} x {c.shape[1]})", **_style(i, len(x)))
      ax.fill_between(x, estimate.lower, estimate.upper, color=_color(i), alpha=0.15, linewidth=0)
    _steps_axis(ax, max_steps)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(title="label (runs x games); band: 95 % CI", frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _grid(n: int) -> Tuple[int, int]:
  cols = min(4, n)
  return int(math.ceil(n / cols)), cols


def _spans_orders_of_magnitude(ax) -> bool:
  values = np.concatenate([line.get_ydata() for line in ax.get_lines()] or [np.array([])])
  return values.size > 0 and values.min() > 0 and values.max() / values.min() > 100


def _draw_metric(ax, runs_by_label: Dict[str, Dict[str, List[Run]]], env: str, column: str,
                 counts: Dict[str, List[int]]) -> float:
  """One panel: `column` of `env` vs gradient steps, per label the mean over runs, band lowest to highest run.
  Appends each label's number of runs to `counts[label]`; returns the largest gradient step drawn."""
  max_steps = 0.0
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
    counts.setdefault(label, []).append(len(env_runs))
    max_steps = max(max_steps, float(x[-1]))
    ax.plot(x, values.mean(axis=0), label=label, **_style(i, len(x)))
    if len(env_runs) > 1:
      ax.fill_between(x, values.min(axis=0), values.max(axis=0), color=_color(i), alpha=0.15, linewidth=0)
  if _spans_orders_of_magnitude(ax):
    ax.set_yscale("log")  # dot products grow by orders of magnitude without DR3 (the paper's Fig. 1)
  ax.grid(alpha=0.3)
  return max_steps


def _legend_shape(labels: Sequence[str], width: float) -> Tuple[int, int]:
  """(columns, rows) of a figure legend: an entry takes its marker (~0.45 in) and its text, the label plus
  " (N runs per game)", ~0.05 in a character at the legend's 7 pt; at least 1.75 in."""
  entry = max([1.75] + [0.45 + 0.05 * (len(label) + 18) for label in labels])
  cols = max(1, min(len(labels), int(width // entry)))
  return cols, math.ceil(len(labels) / cols)


def _figure_legend(fig, counts: Dict[str, List[int]], ncols: int) -> None:
  """One legend for the figure under the panels: each label with its runs per game, and what the band is."""
  handles, labels = [], []
  for ax in fig.axes:
    for handle, label in zip(*ax.get_legend_handles_labels()):
      if label not in labels:
        handles.append(handle)
        labels.append(label)
  shown = [f"{label} ({_run_counts(counts[label])} per game)" for label in labels]
  fig.legend(handles, shown, loc="lower center", ncol=ncols, frameon=False,
             title="line: mean over runs; band: lowest to highest run")


def _finish(fig, path: str, legend_rows: int) -> None:
  """Lays the panels out above the legend (its title and rows take ~0.17 in each) and saves."""
  legend_inches = 0.2 + 0.17 * (legend_rows + 1)
  fig.tight_layout(rect=(0, legend_inches / fig.get_figheight(), 1, 1))
  fig.savefig(path, dpi=DPI)
  plt.close(fig)


def _envs_with(runs_by_label: Dict[str, Dict[str, List[Run]]], columns: Sequence[str],
               envs: Sequence[str]) -> List[str]:
  envs = list(envs) or sorted({env for by_env in runs_by_label.values() for env in by_env})
  return [e for e in envs if any(r.has_finite(c) for c in columns for by_env in runs_by_label.values()
                                 for r in by_env.get(e, []))]


def plot_metric_per_env(runs_by_label: Dict[str, Dict[str, List[Run]]], column: str, title: str, path: str,
                        *, envs: Sequence[str] = (), ylabel: str = "") -> bool:
  """runs_by_label: label -> env -> runs. Returns False (and writes nothing) if no run has the column.
  `ylabel`: the quantity in words (default: `column_label(column)`)."""
  envs = _envs_with(runs_by_label, [column], envs)
  if not envs:
    return False
  rows, cols = _grid(len(envs))
  width = PAGE_WIDTH if cols > 1 else PAGE_WIDTH * 0.55
  legend_cols, legend_rows = _legend_shape(list(runs_by_label), width)
  with plt.rc_context(_FONTS):
    fig, axes = plt.subplots(rows, cols, figsize=(width, 1.75 * rows + 0.6 + 0.17 * legend_rows), squeeze=False)
    counts: Dict[str, List[int]] = {}
    max_steps = 0.0
    for ax, env in zip(axes.flat, envs):
      max_steps = max(max_steps, _draw_metric(ax, runs_by_label, env, column, counts))
      ax.set_title(env)
    for k, ax in enumerate(list(axes.flat)[:len(envs)]):
      _steps_axis(ax, max_steps, label=k + cols >= len(envs))  # the lowest panel of each column
    for ax in list(axes.flat)[len(envs):]:
      ax.set_visible(False)
    fig.supylabel(ylabel or column_label(column), fontsize=8)
    fig.suptitle(title)
    _figure_legend(fig, counts, legend_cols)
    _finish(fig, path, legend_rows)
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
  width = min(PAGE_WIDTH, 2.3 * len(envs) + 0.7)
  legend_cols, legend_rows = _legend_shape(list(runs_by_label), width)
  with plt.rc_context(_FONTS):
    fig, axes = plt.subplots(len(metrics), len(envs), figsize=(width, 1.8 * len(metrics) + 0.6 + 0.17 * legend_rows),
                             squeeze=False)
    counts: Dict[str, List[int]] = {}
    max_steps = 0.0
    for row, (column, ylabel) in enumerate(metrics):
      for col, env in enumerate(envs):
        ax = axes[row, col]
        max_steps = max(max_steps, _draw_metric(ax, runs_by_label, env, column, counts))
        if row == 0:
          ax.set_title(env)
        if col == 0:
          ax.set_ylabel(textwrap.fill(ylabel, 24, break_long_words=False))  # a panel is ~1.8 in high: long labels on two lines
    for row in range(len(metrics)):
      for col in range(len(envs)):
        _steps_axis(axes[row, col], max_steps, label=row == len(metrics) - 1)
    fig.suptitle(title)
    _figure_legend(fig, counts, legend_cols)
    _finish(fig, path, legend_rows)
  return True
