"""From runs to score arrays and tables: Table 1 (Atari IQM), per-game scores, Table 2 (D4RL).

Choices (the report prints them as notes too):
  - Score = `eval/return` of metrics.csv, normalized here (human-normalized for Atari, D4RL-normalized for
    continuous tasks), so runs written before a reference table changed are still scored the same way.
  - Iterations: within one (setting, label) group every run is cut to the shortest run's number of iterations
    (the common prefix), for the curves and for final/average alike, so all runs of a cell describe the same
    training length; the tables print the gradient steps reached.
  - Runs per game: rliable needs a rectangular [runs, games] matrix, so a label uses, on every game, the same
    number of runs: the smallest count over its games (lowest seeds kept; the others are named in a warning).
  - Games: in a setting, aggregates use the games that *every* label has usable runs for, so that the labels'
    IQMs average the same games and can be compared; games left out are listed. If no game is shared, each
    label is aggregated over its own games (and the note says so). Games without a human score (AirRaid,
    Carnival, ElevatorAction, JourneyEscape, Pooyan) are in the per-game tables with raw scores only.
"""
import csv
import dataclasses
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from batch_rl_dr3 import labels
from batch_rl_dr3 import reference_scores as scores
from batch_rl_dr3.analysis import aggregate, paper_results
from batch_rl_dr3.analysis.runs import Run
from batch_rl_dr3.atari_games import DR3_PAPER_GAMES
from batch_rl_dr3.progress import Progress

SCORE_COLUMN = "eval/return"
SUMMARIES: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "average": aggregate.average_scores,  # mean over the course of training (DR3's "stability")
    "final": aggregate.final_scores,
}
Warn = Callable[[str], None]

# Printed under Table 1 so that a reader of the file alone knows how its numbers were made.
METHOD_NOTES = (
    "Score: `eval/return` of metrics.csv, human-normalized in percent: 100 (raw - random) / (human - random), "
    "random/human scores of dqn_zoo/atari_data.py.",
    "Average performance: per run and game, the mean of the evaluation scores over all iterations; final "
    "performance: the score of the last evaluated iteration. Then IQM over runs x games (rliable).",
    "95 % CIs: rliable's stratified bootstrap (runs resampled within each game; games too when there is a single "
    "run), percentile method, seeded (see --seed, --reps).",
    "Within a setting and label, runs are cut to the shortest run's iterations (the common prefix); every game "
    "contributes the same number of runs (the lowest seeds); only games every label has are aggregated.",
)

# setting -> label -> env (game or task) -> runs (sorted by seed, then path)
RunGroups = Dict[str, Dict[str, Dict[str, List[Run]]]]


def _seed_key(run: Run) -> Tuple[float, str]:
  return (run.seed if isinstance(run.seed, (int, float)) else math.inf, run.path)


def group_runs(runs: Sequence[Run], domain: str) -> RunGroups:
  groups: RunGroups = {}
  for run in runs:
    if run.domain == domain:
      groups.setdefault(run.setting, {}).setdefault(run.label, {}).setdefault(run.env, []).append(run)
  for by_label in groups.values():
    for by_env in by_label.values():
      for env_runs in by_env.values():
        env_runs.sort(key=_seed_key)
  return groups


def _scored_runs(by_env: Dict[str, List[Run]], where: str, warn: Warn) -> Tuple[Dict[str, List[Run]], int]:
  """Runs with an evaluated score, and the common number of iterations of the group."""
  scored = {}
  for env, env_runs in by_env.items():
    for run in env_runs:
      if not run.has_finite(SCORE_COLUMN):
        warn(f"WARNING: {run.path}: no {SCORE_COLUMN!r} values in metrics.csv; left out of the scores of {where}.")
    kept = [r for r in env_runs if r.has_finite(SCORE_COLUMN)]
    if kept:
      scored[env] = kept
  if not scored:
    return {}, 0
  lengths = {r.num_iterations for env_runs in scored.values() for r in env_runs}
  common = min(lengths)
  if len(lengths) > 1:
    warn(f"WARNING: {where}: runs have {min(lengths)}..{max(lengths)} iterations; using the first {common} of "
         f"every run (the common prefix).")
  # A run whose score only starts after the common prefix cannot be summarized on it.
  for env in list(scored):
    kept = [r for r in scored[env] if np.isfinite(r.column(SCORE_COLUMN)[:common]).any()]
    for r in scored[env]:
      if r not in kept:
        warn(f"WARNING: {r.path}: no {SCORE_COLUMN!r} value in the first {common} iterations; left out of {where}.")
    if kept:
      scored[env] = kept
    else:
      del scored[env]
  return scored, common


def _gradient_steps(runs: Sequence[Run], num_iterations: int, where: str, warn: Warn) -> np.ndarray:
  steps = runs[0].gradient_steps[:num_iterations]
  if any(not np.array_equal(r.gradient_steps[:num_iterations], steps) for r in runs[1:]):
    warn(f"WARNING: {where}: runs disagree on gradient_steps per iteration; the x axis uses {runs[0].path}.")
  return steps


@dataclasses.dataclass
class PerEnvScores:
  """One label on one game/task: raw-return curves of its runs, cut to the group's common prefix."""
  runs: List[Run]
  returns: np.ndarray  # [num_runs, num_iterations]
  normalized: Optional[np.ndarray]  # same shape, None when the env has no reference score


@dataclasses.dataclass
class LabelScores:
  """One (setting, label): per-env curves and the x axis."""
  setting: str
  label: str
  num_iterations: int
  gradient_steps: np.ndarray  # [num_iterations]
  envs: Dict[str, PerEnvScores]


def _normalizer(domain: str) -> Tuple[Callable[[str], bool], Callable[[str, np.ndarray], np.ndarray]]:
  if domain == "atari":
    return scores.has_human_score, scores.human_normalized_score
  return scores.has_d4rl_reference, scores.d4rl_normalized_score


def label_scores(groups: RunGroups, domain: str, warn: Warn) -> Dict[str, Dict[str, LabelScores]]:
  """setting -> label -> LabelScores, for every group with at least one scored run."""
  has_reference, normalize = _normalizer(domain)
  result: Dict[str, Dict[str, LabelScores]] = {}
  for setting, by_label in sorted(groups.items()):
    for label, by_env in sorted(by_label.items()):
      where = f"setting {setting!r}, {label}"
      scored, common = _scored_runs(by_env, where, warn)
      if not scored:
        continue
      all_runs = [r for env_runs in scored.values() for r in env_runs]
      differing = labels.distinct_derived_labels([r.info for r in all_runs])
      if len(differing) > 1:
        warn(f"WARNING: {where}: its runs were run with different settings ({'; '.join(differing)}); their "
             f"explicit label pools them. Drop or change the labels to compare them apart.")
      envs = {}
      for env, env_runs in sorted(scored.items()):
        returns = np.stack([r.column(SCORE_COLUMN)[:common] for r in env_runs])
        envs[env] = PerEnvScores(env_runs, returns, normalize(env, returns) if has_reference(env) else None)
      result.setdefault(setting, {})[label] = LabelScores(
          setting, label, common, _gradient_steps(all_runs, common, where, warn), envs)
  return result


@dataclasses.dataclass
class AggregationInput:
  """Normalized curves [runs, games, iterations] per label of one setting, over a shared game list."""
  setting: str
  games_by_label: Dict[str, List[str]]
  curves: Dict[str, np.ndarray]
  notes: List[str]


def aggregation_input(setting: str, by_label: Dict[str, LabelScores], warn: Warn) -> Optional[AggregationInput]:
  notes = []
  normalizable = {label: [g for g, s in ls.envs.items() if s.normalized is not None]
                  for label, ls in by_label.items()}
  unscored = sorted({g for ls in by_label.values() for g, s in ls.envs.items() if s.normalized is None})
  if unscored:
    notes.append(f"Without a reference score (raw scores in the per-game table only): {', '.join(unscored)}.")
  normalizable = {label: games for label, games in normalizable.items() if games}
  if not normalizable:
    return None
  shared = sorted(set.intersection(*(set(g) for g in normalizable.values())))
  if shared:
    games_by_label = {label: shared for label in normalizable}
    left_out = sorted(set().union(*(set(g) for g in normalizable.values())) - set(shared))
    if left_out:
      notes.append(f"Left out of the aggregates (not run by every label): {', '.join(left_out)}.")
      warn(f"WARNING: setting {setting!r}: games {left_out} are not run by every label; aggregates use the "
           f"{len(shared)} shared games.")
  else:
    games_by_label = {label: sorted(games) for label, games in normalizable.items()}
    notes.append("No game is shared by all labels: each label is aggregated over its own games (IQMs are not "
                 "directly comparable).")
    warn(f"WARNING: setting {setting!r}: no game is shared by all labels; each label uses its own games.")
  aggregated = sorted(set().union(*(set(g) for g in games_by_label.values())))
  if set(aggregated) != set(DR3_PAPER_GAMES):
    missing = sorted(set(DR3_PAPER_GAMES) - set(aggregated))
    notes.append(f"Not the paper's {len(DR3_PAPER_GAMES)} games (missing: {', '.join(missing) or 'none'}; extra: "
                 f"{', '.join(sorted(set(aggregated) - set(DR3_PAPER_GAMES))) or 'none'}): the paper column is "
                 f"not a like-for-like comparison.")
  curves = {}
  for label, games in games_by_label.items():
    per_game = [by_label[label].envs[g] for g in games]
    num_runs = min(len(s.runs) for s in per_game)
    dropped = [r.path for s in per_game for r in s.runs[num_runs:]]
    if dropped:
      notes.append(f"{label}: {num_runs} run(s) per game used (the fewest any game has); not used: "
                   f"{len(dropped)} run(s).")
      warn(f"WARNING: setting {setting!r}, {label}: using {num_runs} run(s) per game (lowest seeds); "
           f"not aggregated: {', '.join(dropped)}.")
    curves[label] = np.stack([s.normalized[:num_runs] for s in per_game], axis=1)  # [runs, games, T]
  return AggregationInput(setting, games_by_label, curves, notes)


# ------------------------------------------------------------------ Table 1
@dataclasses.dataclass
class Table1Row:
  setting: str
  label: str
  summary: str  # 'average' | 'final'
  aggregate: str  # 'IQM', 'Median', ...
  estimate: aggregate.IntervalEstimate
  num_runs: int
  num_games: int
  gradient_steps: int
  paper: Optional[aggregate.IntervalEstimate]


def table1_rows(inputs: Sequence[AggregationInput], by_setting: Dict[str, Dict[str, LabelScores]], *,
                reps: int, seed: int, aggregates: Sequence[str] = tuple(aggregate.AGGREGATE_FUNCTIONS),
                progress: Optional[Progress] = None) -> List[Table1Row]:
  """Every aggregate with its bootstrap CI, per input x label x summary (`progress` advances by one for each of
  these `table1_bootstrap_count(inputs)` bootstraps)."""
  rows = []
  for inp in inputs:
    for label, curves in inp.curves.items():
      steps = int(by_setting[inp.setting][label].gradient_steps[-1])
      for summary, summarize in SUMMARIES.items():
        matrix = summarize(curves)
        estimates = aggregate.aggregate_table({label: matrix}, aggregates, reps=reps, seed=seed)
        if progress is not None:
          progress.update(1, f"{inp.setting} {label} {summary}")
        for name in aggregates:
          estimate = estimates[name][label]
          paper = (paper_results.table1_value(inp.setting, label)
                   if (summary, name) == ("average", "IQM") else None)
          rows.append(Table1Row(inp.setting, label, summary, name, estimate, matrix.shape[0], matrix.shape[1],
                                steps, paper))
  return rows


def table1_bootstrap_count(inputs: Sequence[AggregationInput]) -> int:
  return sum(len(inp.curves) for inp in inputs) * len(SUMMARIES)


def _num(x: float) -> str:
  """Full precision for CSV cells; empty for NaN."""
  return "" if x is None or not np.isfinite(x) else repr(float(x))


def _fmt(x: Optional[float], digits: int = 1) -> str:
  return "" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def write_table1(rows: Sequence[Table1Row], inputs: Sequence[AggregationInput], csv_path: str,
                 md_path: str) -> str:
  """Writes the CSV (every aggregate) and the Markdown (IQM); returns the compact text for stdout."""
  with open(csv_path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["setting", "label", "summary", "aggregate", "point", "ci_lower", "ci_upper", "num_runs",
                "num_games", "gradient_steps", "paper_point", "paper_ci_lower", "paper_ci_upper"])
    for r in rows:
      p = r.paper
      w.writerow([r.setting, r.label, r.summary, r.aggregate, _num(r.estimate.point), _num(r.estimate.lower),
                  _num(r.estimate.upper), r.num_runs, r.num_games, r.gradient_steps,
                  "" if p is None else p.point, "" if p is None else p.lower, "" if p is None else p.upper])
  iqm_rows = [r for r in rows if r.aggregate == "IQM"]
  settings = list(dict.fromkeys(r.setting for r in iqm_rows))
  labels = list(dict.fromkeys(r.label for r in iqm_rows))
  lines = ["# Table 1: IQM of the human-normalized score (%), 95 % stratified-bootstrap CI", "",
           "Cells: ours as `IQM (CI low, CI high)` [runs x games, gradient steps]; **paper** = the DR3 paper's "
           "published Table 1 value for the same setting and label (average performance over training).", ""]
  compact = []
  titles = {"average": "Average performance over the course of training (DR3's stability measure)",
            "final": "Final performance (last evaluated iteration)"}
  for summary in SUMMARIES:
    lines += [f"## {titles[summary]}", "", "| setting | " + " | ".join(labels) + " |",
              "|---" * (len(labels) + 1) + "|"]
    compact.append(f"{summary} performance, IQM normalized score (95% CI):")
    compact.append("  " + f"{'setting':<12}" + "".join(f"{label:>26}" for label in labels))
    for setting in settings:
      cells, compact_cells = [], []
      for label in labels:
        match = [r for r in iqm_rows if (r.setting, r.label, r.summary) == (setting, label, summary)]
        if not match:
          cells.append("")
          compact_cells.append("")
          continue
        r = match[0]
        cell = f"{r.estimate.format()} [{r.num_runs}x{r.num_games}, {r.gradient_steps:,} steps]"
        if r.paper is not None:
          cell += f"<br>**paper** {r.paper.format()}"
        cells.append(cell)
        compact_cells.append(r.estimate.format())
      lines.append(f"| {setting} | " + " | ".join(cells) + " |")
      compact.append("  " + f"{setting:<12}" + "".join(f"{c:>26}" for c in compact_cells))
    lines.append("")
  lines += ["## How these numbers are made", ""] + [f"- {note}" for note in METHOD_NOTES] + [""]
  lines += ["## Games aggregated", ""]
  for inp in inputs:
    games = sorted(set().union(*(set(g) for g in inp.games_by_label.values())))
    lines.append(f"- {inp.setting}: {len(games)} games: {', '.join(games)}")
    lines += [f"  - {note}" for note in inp.notes]
  lines.append("")
  with open(md_path, "w") as f:
    f.write("\n".join(lines))
  return "\n".join(compact)


# ------------------------------------------------------------------ per-game and Table 2
@dataclasses.dataclass
class PerRunSummary:
  setting: str
  env: str
  label: str
  seed: str
  num_iterations: int
  gradient_steps: int
  final_return: float
  average_return: float
  final_normalized: float
  average_normalized: float


def per_run_summaries(by_label: Dict[str, LabelScores]) -> List[PerRunSummary]:
  """Per (env, label): one row per run, then a 'mean' row over its runs."""
  rows = []
  for label, ls in by_label.items():
    for env, s in ls.envs.items():
      finals, averages = aggregate.final_scores(s.returns), aggregate.average_scores(s.returns)
      if s.normalized is not None:
        final_norm, average_norm = aggregate.final_scores(s.normalized), aggregate.average_scores(s.normalized)
      else:
        final_norm = average_norm = np.full(len(s.runs), np.nan)
      steps = int(ls.gradient_steps[-1])
      for i, run in enumerate(s.runs):
        rows.append(PerRunSummary(ls.setting, env, label, str(run.seed), ls.num_iterations, steps, finals[i],
                                  averages[i], final_norm[i], average_norm[i]))
      rows.append(PerRunSummary(ls.setting, env, label, "mean", ls.num_iterations, steps, float(np.mean(finals)),
                                float(np.mean(averages)), float(np.mean(final_norm)),
                                float(np.mean(average_norm))))
  rows.sort(key=lambda r: (r.env, r.label, r.seed == "mean"))
  return rows


_PER_RUN_HEADER = ["seed", "num_iterations", "gradient_steps", "final_return", "average_return",
                   "final_normalized", "average_normalized"]


def write_per_run_csv(rows: Sequence[PerRunSummary], env_header: str, path: str) -> None:
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["setting", env_header, "label"] + _PER_RUN_HEADER)
    for r in rows:
      w.writerow([r.setting, r.env, r.label, r.seed, r.num_iterations, r.gradient_steps, _num(r.final_return),
                  _num(r.average_return), _num(r.final_normalized), _num(r.average_normalized)])


def write_per_game_md(rows: Sequence[PerRunSummary], setting: str, path: str) -> None:
  means = [r for r in rows if r.seed == "mean"]
  labels = list(dict.fromkeys(r.label for r in means))
  games = sorted({r.env for r in means})
  lines = [f"# Per-game scores, setting {setting}", "",
           "Mean over runs of the raw return: `final / average over training`; human-normalized % in "
           "parentheses. Per-seed values are in the CSV next to this file.", "",
           "| game | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
  for game in games:
    cells = []
    for label in labels:
      match = [r for r in means if (r.env, r.label) == (game, label)]
      if not match:
        cells.append("")
        continue
      r = match[0]
      cell = f"{_fmt(r.final_return)} / {_fmt(r.average_return)}"
      if not math.isnan(r.final_normalized):
        cell += f" ({_fmt(r.final_normalized)} / {_fmt(r.average_normalized)})"
      cells.append(cell)
    lines.append(f"| {game} | " + " | ".join(cells) + " |")
  lines.append("")
  with open(path, "w") as f:
    f.write("\n".join(lines))


def _task_name(r: PerRunSummary) -> str:
  return r.env if r.setting == "default" else f"{r.env} ({r.setting})"


def _paper_comparison(paper: Optional[paper_results.PaperScore], final_normalized: np.ndarray) -> str:
  """'yes' / 'no': our mean final D4RL-normalized score within the paper's mean ± spread; '' without either."""
  if paper is None or np.all(np.isnan(final_normalized)):
    return ""
  return "yes" if paper.contains(float(np.mean(final_normalized))) else "no"


def write_table2(rows: Sequence[PerRunSummary], csv_path: str, md_path: str) -> None:
  """Continuous tasks: D4RL-normalized final and average score, mean and std over seeds, paper beside.

  The paper's Table 2 values are its final scores, shown on our scale (D4RL-normalized percent; it prints
  antmaze as a success fraction) with its printed text, and whether our final mean is within its spread.
  """
  by_cell: Dict[Tuple[str, str], List[PerRunSummary]] = {}
  for r in rows:
    if r.seed != "mean":
      by_cell.setdefault((_task_name(r), r.label), []).append(r)
  with open(csv_path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["task", "setting", "label", "num_runs", "gradient_steps", "final_normalized_mean",
                "final_normalized_std", "average_normalized_mean", "average_normalized_std", "final_return_mean",
                "average_return_mean", "paper_final_normalized_mean", "paper_final_normalized_spread",
                "paper_printed", "final_within_paper_spread"])
    for (_, label), cell in sorted(by_cell.items()):
      fn = np.array([r.final_normalized for r in cell])
      an = np.array([r.average_normalized for r in cell])
      paper = paper_results.table2_value(cell[0].env, label)
      w.writerow([cell[0].env, cell[0].setting, label, len(cell), cell[0].gradient_steps, _num(np.mean(fn)),
                  _num(np.std(fn)), _num(np.mean(an)), _num(np.std(an)), _num(np.mean([r.final_return for r in cell])),
                  _num(np.mean([r.average_return for r in cell])),
                  "" if paper is None else _num(paper.mean), "" if paper is None else _num(paper.spread),
                  "" if paper is None else paper.printed, _paper_comparison(paper, fn)])
  labels = sorted({label for _, label in by_cell})
  tasks = sorted({task for task, _ in by_cell})
  lines = ["# Table 2: continuous tasks, D4RL-normalized score (%)", "",
           "Cells: `final / average over training`, mean ± std over runs [runs]; **paper** = the DR3 paper's "
           "Table 2 value for the task and label (its score after 2M steps, so compare it with our *final*), on "
           "our scale (D4RL-normalized %: the paper prints antmaze as a success fraction, e.g. 0.7 = 70 %), its "
           "printed text in parentheses, and whether our final mean lies within the paper's mean ± spread. "
           "Tasks without a D4RL reference show raw returns.",
           "", "| task | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
  for task in tasks:
    cells = []
    for label in labels:
      cell = by_cell.get((task, label))
      if not cell:
        cells.append("")
        continue
      fn = np.array([r.final_normalized for r in cell])
      an = np.array([r.average_normalized for r in cell])
      if np.all(np.isnan(fn)):
        fn = np.array([r.final_return for r in cell])
        an = np.array([r.average_return for r in cell])
      text = (f"{_fmt(np.mean(fn))} ± {_fmt(np.std(fn))} / {_fmt(np.mean(an))} ± {_fmt(np.std(an))} "
              f"[{len(cell)}]")
      paper = paper_results.table2_value(cell[0].env, label)
      if paper is not None:
        within = _paper_comparison(paper, np.array([r.final_normalized for r in cell]))
        text += f"<br>**paper** {paper.format()} (printed {paper.printed})"
        if within:
          text += f": ours {'within' if within == 'yes' else 'outside'} its spread"
      cells.append(text)
    lines.append(f"| {task} | " + " | ".join(cells) + " |")
  lines.append("")
  lines += brac_median_lines(rows)
  with open(md_path, "w") as f:
    f.write("\n".join(lines))


@dataclasses.dataclass
class MedianSummary:
  label: str
  num_tasks: int
  final: float
  average: float


def brac_medians(rows: Sequence[PerRunSummary]) -> List[MedianSummary]:
  """Per label: the median over the paper's 15 BRAC MuJoCo tasks of the per-task mean D4RL-normalized score
  (final and average over training), for labels that have all 15 tasks (in the 'default' data setting)."""
  means = {}
  for r in rows:
    name = scores.d4rl_env_name(r.env)
    if r.seed == "mean" and r.setting == "default" and name in paper_results.BRAC_MUJOCO_TASKS:
      means.setdefault(r.label, {})[name] = r
  out = []
  for label, by_task in sorted(means.items()):
    if len(by_task) == len(paper_results.BRAC_MUJOCO_TASKS):
      out.append(MedianSummary(label, len(by_task), float(np.median([r.final_normalized for r in by_task.values()])),
                               float(np.median([r.average_normalized for r in by_task.values()]))))
  return out


def brac_median_lines(rows: Sequence[PerRunSummary]) -> List[str]:
  """The BRAC claim section of table2.md: medians per label and each '+DR3' label's gain over its base."""
  medians = {m.label: m for m in brac_medians(rows)}
  if not medians:
    return []
  claim = paper_results.DR3_BRAC_MEDIAN_IMPROVEMENT
  lines = ["## BRAC on the 15 MuJoCo tasks", "",
           "The paper (Sec. 6): \"DR3 applied on BRAC improves final median normalized score performance by "
           f"{claim['final']} and stability by {claim['average']} across 15 MuJoCo tasks.\" Median over "
           f"{', '.join(paper_results.BRAC_MUJOCO_TASKS)} of the per-task mean D4RL-normalized score (%); "
           "stability = the average over training.", "",
           "| label | median final | median average | final gain over base (paper) | "
           "average gain over base (paper) |", "|---|---|---|---|---|"]
  for label, m in medians.items():
    base = medians.get(label.split("+DR3", 1)[0]) if "+DR3" in label else None
    gains = ["", ""]
    if base is not None:
      gains = [f"{m.final - base.final:+.1f} (+{claim['final']})", f"{m.average - base.average:+.1f} "
               f"(+{claim['average']})"]
    lines.append(f"| {label} | {_fmt(m.final)} | {_fmt(m.average)} | {gains[0]} | {gains[1]} |")
  lines.append("")
  return lines
