"""The actor-regularization study's protocol (Tarasov et al. 2024, reference §4-§5): scores, the table of each
regularizer / combination against the unregularized baseline per domain, rliable aggregates, diagnostics ratios.

* Score of a run: D4RL-normalized `eval/return` (x100, reference_scores.py), averaged over the run's last 10
  evaluations (last 5 for AntMaze), as the study's final score.
* Per dataset: mean over the runs (seeds) of a (algorithm, label).
* Improvement of a variant over its algorithm's baseline, per domain (locomotion, AntMaze, Adroit) and over all:
  100 * (avg_variant - avg_baseline) / avg_baseline, avg = mean over the datasets both have of the per-dataset mean.
* Algorithm = run_info's `agent`; the baseline of an algorithm is its label without '+' (e.g. 'ReBRAC' for
  'ReBRAC+LN+DO'), unless `baselines` names another.
* rliable (aggregate.aggregate_table): median / IQM / mean / optimality gap of the score matrix [runs, datasets],
  each dataset contributing the same number of runs (the fewest any has; the study pads to 5); and the probability
  of improvement of each variant over its baseline on the datasets both have (aggregate.probability_of_improvement).
* Diagnostics: per run, the ratio validation / train of each actor metric (train clipped below at 1e-3, ratios >= 10
  dropped) averaged over the last 10 evaluations (5 AntMaze); the noisy-evaluation ratio
  min(max(noisy, 1e-6) / max(clean, 1e-6), 1.1) per dataset, then averaged (reference §4).
"""
import csv
import dataclasses
import os
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from batch_rl_dr3 import reference_scores as scores
from batch_rl_dr3.analysis import aggregate
from batch_rl_dr3.analysis.runs import Run

DOMAINS = ("locomotion", "antmaze", "adroit")
_DOMAIN_PREFIXES = {"halfcheetah": "locomotion", "hopper": "locomotion", "walker2d": "locomotion",
                    "antmaze": "antmaze", "pen": "adroit", "door": "adroit", "hammer": "adroit", "relocate": "adroit"}
LAST_EVALUATIONS = {"antmaze": 5}
DEFAULT_LAST_EVALUATIONS = 10
RETURN_COLUMN = "eval/return"
ACTOR_METRICS = ("dead_neurons_frac", "feature_norms", "feature_means", "feature_stds", "pca_rank", "action_mse")
VALIDATION_PREFIX, TRAIN_PREFIX = "eval/actor_validation/", "eval/actor_train/"
NOISY_EVALUATIONS = ("action_noise", "state_noise")
PROBABILITY_OF_IMPROVEMENT_REPS = 2000  # the study's plotting script
Warn = Callable[[str], None]


def domain_of(task: str) -> Optional[str]:
  """'locomotion' / 'antmaze' / 'adroit' for the study's D4RL names, None otherwise."""
  return _DOMAIN_PREFIXES.get(task.split("-")[0])


def last_evaluations(task: str) -> int:
  return LAST_EVALUATIONS.get(domain_of(task), DEFAULT_LAST_EVALUATIONS)


def final_value(values: np.ndarray, count: int) -> float:
  """Mean of the last `count` evaluated (finite) values of a per-iteration column; NaN when there is none."""
  finite = np.asarray(values, np.float64)
  finite = finite[np.isfinite(finite)]
  return float(finite[-count:].mean()) if len(finite) else float("nan")


def run_score(run: Run) -> float:
  """The study's score of one run: D4RL-normalized return, mean of the last 10 evaluations (AntMaze 5)."""
  returns = run.column(RETURN_COLUMN)
  if returns is None or not scores.has_d4rl_reference(run.env):
    return float("nan")
  return final_value(scores.d4rl_normalized_score(run.env, returns), last_evaluations(run.env))


def algorithm_of(run: Run) -> str:
  return str(run.info.get("agent") or run.label.split("+")[0])


@dataclasses.dataclass
class Cell:
  """One (algorithm, label, dataset): the runs' study scores."""
  algorithm: str
  label: str
  task: str
  runs: List[Run]
  scores: np.ndarray  # [num_runs]


def cells(runs: Sequence[Run], warn: Warn = lambda m: None) -> Dict[Tuple[str, str, str], Cell]:
  """(algorithm, label, task) -> Cell, for runs on the study's domains (locomotion, AntMaze, Adroit) with an
  evaluation."""
  grouped: Dict[Tuple[str, str, str], List[Run]] = {}
  for run in runs:
    if run.domain != "continuous" or domain_of(run.env) is None:
      continue  # only the study's three domains
    if not scores.has_d4rl_reference(run.env):
      warn(f"WARNING: {run.path}: task {run.env!r} has no D4RL reference score; not in the actor-study table.")
      continue
    if not np.isfinite(run_score(run)):
      warn(f"WARNING: {run.path}: no evaluated {RETURN_COLUMN!r}; not in the actor-study table.")
      continue
    grouped.setdefault((algorithm_of(run), run.label, run.env), []).append(run)
  return {key: Cell(*key, sorted(rs, key=lambda r: (r.seed if r.seed is not None else 1 << 30, r.path)),
                    np.array([run_score(r) for r in rs]))
          for key, rs in sorted(grouped.items())}


def baseline_labels(labels_by_algorithm: Mapping[str, Sequence[str]],
                    baselines: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
  """algorithm -> its baseline label: `baselines[algorithm]`, else its only label without '+'."""
  result = {}
  for algorithm, labels in labels_by_algorithm.items():
    if baselines and algorithm in baselines:
      result[algorithm] = baselines[algorithm]
      continue
    plain = [label for label in labels if "+" not in label]
    if len(plain) == 1:
      result[algorithm] = plain[0]
  return result


def improvement(variant: float, base: float) -> float:
  """100 * (variant - base) / base (the study's improvement %); NaN when base is 0."""
  return float("nan") if base == 0 else 100.0 * (variant - base) / base


@dataclasses.dataclass
class StudyRow:
  algorithm: str
  label: str
  is_baseline: bool
  averages: Dict[str, float]  # domain or 'all' -> mean over the shared datasets of the per-dataset mean score
  improvements: Dict[str, float]  # domain or 'all' -> improvement % over the baseline on the same datasets
  datasets: Dict[str, int]  # domain or 'all' -> number of datasets averaged
  probability_of_improvement: Optional[aggregate.IntervalEstimate] = None  # over the baseline, shared datasets


def study_rows(by_cell: Mapping[Tuple[str, str, str], Cell], baselines: Optional[Mapping[str, str]] = None,
               warn: Warn = lambda m: None, *, reps: int = 2000, seed: int = 0) -> List[StudyRow]:
  """One row per (algorithm, label): per-domain average score and improvement over the algorithm's baseline, and
  rliable's probability of improvement over it (reps bootstrap replications, seeded)."""
  means: Dict[Tuple[str, str], Dict[str, float]] = {}
  for (algorithm, label, task), cell in by_cell.items():
    means.setdefault((algorithm, label), {})[task] = float(cell.scores.mean())
  labels_by_algorithm: Dict[str, List[str]] = {}
  for algorithm, label in means:
    labels_by_algorithm.setdefault(algorithm, []).append(label)
  base_of = baseline_labels(labels_by_algorithm, baselines)
  for algorithm in labels_by_algorithm:
    if algorithm not in base_of:
      warn(f"WARNING: algorithm {algorithm!r}: no single baseline label among {labels_by_algorithm[algorithm]}; "
           f"no improvement computed (name it with baselines=).")
  rows = []
  for (algorithm, label), per_task in sorted(means.items()):
    base = means.get((algorithm, base_of.get(algorithm, "")), {})
    averages, gains, counts = {}, {}, {}
    for domain in DOMAINS + ("all",):
      tasks = sorted(t for t in per_task if domain == "all" or domain_of(t) == domain)
      if not tasks:
        continue
      averages[domain] = float(np.mean([per_task[t] for t in tasks]))
      counts[domain] = len(tasks)
      shared = [t for t in tasks if t in base]
      if shared and label != base_of.get(algorithm):
        gains[domain] = improvement(float(np.mean([per_task[t] for t in shared])),
                                    float(np.mean([base[t] for t in shared])))
    row = StudyRow(algorithm, label, label == base_of.get(algorithm), averages, gains, counts)
    shared = sorted(t for t in per_task if t in base)
    if shared and not row.is_baseline:
      base_key = (algorithm, base_of[algorithm])
      row.probability_of_improvement = aggregate.probability_of_improvement(
          score_matrix(by_cell, algorithm, label, shared), score_matrix(by_cell, *base_key, shared),
          reps=reps, seed=seed)
    rows.append(row)
  return rows


def score_matrix(by_cell: Mapping[Tuple[str, str, str], Cell], algorithm: str, label: str,
                 tasks: Sequence[str]) -> np.ndarray:
  """[runs, datasets] of study scores for rliable, each dataset cut to the fewest runs any of them has."""
  per_task = [by_cell[(algorithm, label, t)].scores for t in tasks]
  count = min(len(s) for s in per_task)
  return np.stack([s[:count] for s in per_task], axis=1)


def rliable_table(by_cell: Mapping[Tuple[str, str, str], Cell], *, reps: int = 2000, seed: int = 0):
  """{aggregate: {'algorithm / label': IntervalEstimate}} over each (algorithm, label)'s datasets (score in %)."""
  matrices = {}
  for algorithm, label in sorted({(a, lab) for a, lab, _ in by_cell}):
    tasks = sorted(t for a, lab, t in by_cell if (a, lab) == (algorithm, label))
    matrices[f"{algorithm} / {label}"] = score_matrix(by_cell, algorithm, label, tasks)
  return aggregate.aggregate_table(matrices, reps=reps, seed=seed)


def validation_train_ratio(run: Run, metric: str) -> float:
  """The study's ratio validation / max(train, 1e-3) of an actor metric, ratios >= 10 dropped, averaged over the
  run's last 10 evaluations (AntMaze 5); NaN when the run has no such metric."""
  validation, train = run.column(VALIDATION_PREFIX + metric), run.column(TRAIN_PREFIX + metric)
  if validation is None or train is None:
    return float("nan")
  ratio = np.asarray(validation, np.float64) / np.maximum(np.asarray(train, np.float64), 1e-3)
  ratio[ratio >= 10] = np.nan
  return final_value(ratio, last_evaluations(run.env))


def noise_ratio(run: Run, kind: str) -> float:
  """min(max(noisy, 1e-6) / max(clean, 1e-6), 1.1) of the run's study scores with `kind` noise ('action_noise' or
  'state_noise'); NaN without noisy evaluations."""
  noisy_returns = run.column(f"eval/{kind}/return")
  if noisy_returns is None or not scores.has_d4rl_reference(run.env):
    return float("nan")
  noisy = final_value(scores.d4rl_normalized_score(run.env, noisy_returns), last_evaluations(run.env))
  return float(min(max(noisy, 1e-6) / max(run_score(run), 1e-6), 1.1))


def _mean(values) -> float:
  values = np.asarray(values, np.float64)
  values = values[np.isfinite(values)]
  return float(values.mean()) if len(values) else float("nan")


def diagnostics_rows(by_cell: Mapping[Tuple[str, str, str], Cell]) -> List[Dict[str, object]]:
  """Per (algorithm, label, dataset): mean over runs of each validation/train ratio and noisy-evaluation ratio."""
  rows = []
  for (algorithm, label, task), cell in by_cell.items():
    row: Dict[str, object] = {"algorithm": algorithm, "label": label, "task": task, "runs": len(cell.runs)}
    for metric in ACTOR_METRICS:
      row[f"{metric}_ratio"] = _mean([validation_train_ratio(r, metric) for r in cell.runs])
    for kind in NOISY_EVALUATIONS:
      row[f"{kind}_ratio"] = _mean([noise_ratio(r, kind) for r in cell.runs])
    for key in ("plasticity/bc_loss", "plasticity/start_loss"):
      row[key.replace("/", "_")] = _mean([final_value(r.column("eval/" + key), last_evaluations(task))
                                          for r in cell.runs if r.column("eval/" + key) is not None])
    rows.append(row)
  return rows


def _fmt(x: float, digits: int = 1) -> str:
  return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def write_report(runs: Sequence[Run], out: str, *, warn: Warn = lambda m: None, reps: int = 2000,
                 seed: int = 0, baselines: Optional[Mapping[str, str]] = None) -> List[str]:
  """actor_study.md / .csv (scores and improvements per domain), actor_diagnostics.csv and the ratio plot."""
  by_cell = cells(runs, warn)
  if not by_cell:
    return []
  # the study's bootstrap sizes: 50,000 for the aggregates' CIs (report --reps), 2,000 for P(improvement)
  rows = study_rows(by_cell, baselines, warn, reps=min(reps, PROBABILITY_OF_IMPROVEMENT_REPS), seed=seed)
  files = []
  csv_path = os.path.join(out, "actor_study.csv")
  with open(csv_path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["algorithm", "label", "baseline"] + [f"{d}_{k}" for d in DOMAINS + ("all",)
                                                          for k in ("score", "improvement_pct", "datasets")]
                    + ["probability_of_improvement", "probability_of_improvement_low",
                       "probability_of_improvement_high"])
    for r in rows:
      writer.writerow([r.algorithm, r.label, int(r.is_baseline)] + [
          v for d in DOMAINS + ("all",) for v in (r.averages.get(d, ""), r.improvements.get(d, ""),
                                                  r.datasets.get(d, 0))] + (
          [r.probability_of_improvement.point, r.probability_of_improvement.lower,
           r.probability_of_improvement.upper] if r.probability_of_improvement else ["", "", ""]))
  table = rliable_table(by_cell, reps=reps, seed=seed)
  lines = ["# Actor regularization: scores and improvement over the unregularized baseline", "",
           "Score: D4RL-normalized, mean of each run's last 10 evaluations (AntMaze 5), mean over seeds per dataset,",
           "then over the datasets of the domain. Improvement % = 100 (variant - baseline) / baseline on the",
           "datasets both have (Tarasov et al. 2024).", "",
           "| algorithm | label | " + " | ".join(f"{d} score | {d} impr. %" for d in DOMAINS + ("all",))
           + " | P(improvement) [95 % CI] |",
           "|---|---|" + "---|---|" * (len(DOMAINS) + 1) + "---|"]
  for r in rows:
    cells_md = [f"{_fmt(r.averages.get(d, float('nan')))} ({r.datasets.get(d, 0)}) | "
                f"{'base' if r.is_baseline else _fmt(r.improvements.get(d, float('nan')))}"
                for d in DOMAINS + ("all",)]
    p_improve = r.probability_of_improvement.format(2) if r.probability_of_improvement else "–"
    lines.append(f"| {r.algorithm} | {r.label} | " + " | ".join(cells_md) + f" | {p_improve} |")
  lines += ["", f"rliable, 95 % stratified-bootstrap CIs ({reps} reps, seed {seed}), score in %:", "",
            "| algorithm / label | " + " | ".join(table) + " |", "|---|" + "---|" * len(table)]
  for name in next(iter(table.values())):
    lines.append(f"| {name} | " + " | ".join(table[a][name].format() for a in table) + " |")
  md_path = os.path.join(out, "actor_study.md")
  with open(md_path, "w") as f:
    f.write("\n".join(lines) + "\n")
  files += [md_path, csv_path]
  diag = diagnostics_rows(by_cell)
  diag_path = os.path.join(out, "actor_diagnostics.csv")
  with open(diag_path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(diag[0]))
    writer.writeheader()
    writer.writerows(diag)
  files.append(diag_path)
  plot_path = os.path.join(out, "actor_diagnostics_ratios.png")
  if plot_ratios(diag, plot_path):
    files.append(plot_path)
  return files


def plot_ratios(diag: Sequence[Dict[str, object]], path: str) -> bool:
  """Bars of the validation / train ratio of each actor metric and of the noisy / clean score ratios, one bar per
  (algorithm, label), averaged over the datasets (the study's figures), and the plasticity probe's final BC loss;
  False when no run logged any of them."""
  columns = [f"{m}_ratio" for m in ACTOR_METRICS + NOISY_EVALUATIONS] + ["plasticity_bc_loss"]
  metrics = [c for c in columns if any(np.isfinite(float(r[c])) for r in diag)]
  if not metrics:
    return False
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  names = sorted({f"{r['algorithm']} / {r['label']}" for r in diag})
  fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), squeeze=False)
  for ax, metric in zip(axes[0], metrics):
    values = [_mean([float(r[metric]) for r in diag if f"{r['algorithm']} / {r['label']}" == n]) for n in names]
    ax.barh(range(len(names)), values)
    ax.set_yticks(range(len(names)), names if ax is axes[0][0] else [""] * len(names), fontsize=7)
    if metric == "plasticity_bc_loss":
      ax.set_title("plasticity: BC loss after the probe", fontsize=8)
      continue
    kind = " (noisy/clean)" if metric[:-len("_ratio")] in NOISY_EVALUATIONS else " (val/train)"
    ax.set_title(metric[:-len("_ratio")].replace("_", " ") + kind, fontsize=8)
    ax.axvline(1.0, color="gray", lw=0.8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return True
