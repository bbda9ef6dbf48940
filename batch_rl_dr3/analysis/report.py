r"""Build the tables and plots of the DR3 paper from run folders.

  python -m batch_rl_dr3.analysis.report --runs='runs/**' [--out=DIR] [--seed=0] [--reps=2000]

Writes into --out (default: `<common parent of the run folders>/report`):
  table1.md / table1.csv          Atari: per setting x label, IQM human-normalized score (%) with 95 % CI, for
                                  the average over training (DR3's stability measure) and the final iteration,
                                  the paper's published value beside ours; the CSV also has median, mean and
                                  optimality gap.
  per_game_<setting>.md / .csv    Atari: per game x label, final and average raw return (and normalized),
                                  mean over runs (md) and per seed (csv).
  table2.md / table2.csv          continuous runs (if any): D4RL-normalized final and average score per task.
  per_task_<setting>.csv          continuous: per seed.
  iqm_curves_<setting>.png        IQM normalized score vs gradient steps with 95 % CI bands (Fig. 4 style).
  dot_product_<setting>.png       train/dot_product per game, per label (Fig. 1/5 style), if logged.
  srank_<setting>.png             train/srank per game, per label, if logged.
  fig1_<setting>.png              the paper's Fig. 1 when runs without DR3 differ in the backup: dot products and
                                  average Q over gradient steps, one line per backup (label), per game.
  (continuous: d4rl_curves_<setting>.png, and the same dot product / srank plots with a `continuous_` prefix.)
How runs with different lengths, missing games, single seeds and broken folders are handled: see tables.py and
aggregate.py; the choices are repeated as notes in table1.md.
"""
import os
import re
import sys
from typing import Callable, List, Optional, Sequence

from absl import app
from absl import flags

from batch_rl_dr3.analysis import actor_study, aggregate, plots, tables
from batch_rl_dr3.analysis import runs as runs_lib
from batch_rl_dr3.analysis.runs import Run, load_runs
from batch_rl_dr3.errors import ConfigError, DataError
from batch_rl_dr3.progress import Progress

DIAGNOSTIC_PLOTS = (("train/dot_product", "dot_product", "feature dot product of consecutive state-actions"),
                    ("train/srank", "srank", "effective rank (srank) of the penultimate features"))
# The paper's Fig. 1: feature dot products (top) and the average Q-value over the data (bottom), measured on the
# run's fixed diagnostics batch each iteration.
FIG1_METRICS = (("train/dot_product", plots.column_label("train/dot_product")),
                ("train/fixed_batch/q_data", "average Q(s,a) (return units)"))


def _safe(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9._+-]", "_", name)


def default_out_dir(runs: Sequence[Run]) -> str:
  if any(runs_lib.is_remote(r.path) for r in runs):
    return os.path.abspath("report")  # the report is written locally; runs on gs:// are only read
  return os.path.join(os.path.commonpath([os.path.dirname(os.path.abspath(r.path)) for r in runs]), "report")


def _atari_report(runs: Sequence[Run], out: str, *, seed: int, reps: int, curve_reps: int,
                  warn: Callable[[str], None], files: List[str]) -> Optional[str]:
  groups = tables.group_runs(runs, "atari")
  if not groups:
    return None
  by_setting = tables.label_scores(groups, "atari", warn)
  inputs = [inp for setting, by_label in by_setting.items()
            if (inp := tables.aggregation_input(setting, by_label, warn)) is not None]
  compact = None
  # One progress display over every bootstrap of the report (tables, then curves), with its ETA.
  total = tables.table1_bootstrap_count(inputs) + sum(len(inp.curves) for inp in inputs)
  progress = Progress(f"bootstrap CIs ({reps:,} / {curve_reps:,} replications for tables / curves)", total,
                      "CIs", every_seconds=5, log=warn, enabled=total > 0)
  if inputs:
    rows = tables.table1_rows(inputs, by_setting, reps=reps, seed=seed, progress=progress)
    csv_path, md_path = os.path.join(out, "table1.csv"), os.path.join(out, "table1.md")
    compact = tables.write_table1(rows, inputs, csv_path, md_path)
    files += [md_path, csv_path]
  for setting, by_label in by_setting.items():
    summaries = tables.per_run_summaries(by_label)
    stem = os.path.join(out, f"per_game_{_safe(setting)}")
    tables.write_per_run_csv(summaries, "game", stem + ".csv")
    tables.write_per_game_md(summaries, setting, stem + ".md")
    files += [stem + ".md", stem + ".csv"]
  for inp in inputs:
    path = os.path.join(out, f"iqm_curves_{_safe(inp.setting)}.png")
    steps = {label: by_setting[inp.setting][label].gradient_steps for label in inp.curves}
    plots.plot_aggregate_curves(inp.curves, steps, f"Atari, {inp.setting}: IQM over "
                                f"{len(next(iter(inp.games_by_label.values())))} games", path,
                                reps=curve_reps, seed=seed,
                                on_curve=lambda label, s=inp.setting: progress.update(1, f"{s} {label} curve"))
    files.append(path)
  progress.close()
  _diagnostic_plots(groups, out, "", files)
  return compact


def fig1_labels(by_label) -> List[str]:
  """The labels of a setting that make the paper's Fig. 1: runs without DR3, when they differ in the backup
  (Monte-Carlo regression, offline SARSA, TD-learning with a' ~ pi_beta, Q-learning); [] otherwise."""
  without_dr3 = {label: {r.info.get("backup", "q_learning") for env_runs in by_env.values() for r in env_runs}
                 for label, by_env in by_label.items()
                 if all(not r.info.get("dr3_coefficient") for env_runs in by_env.values() for r in env_runs)}
  backups = set().union(*without_dr3.values()) if without_dr3 else set()
  return sorted(without_dr3) if len(backups) >= 2 else []


def _diagnostic_plots(groups: tables.RunGroups, out: str, prefix: str, files: List[str]) -> None:
  for setting, by_label in sorted(groups.items()):
    for column, stem, description in DIAGNOSTIC_PLOTS:
      path = os.path.join(out, f"{prefix}{stem}_{_safe(setting)}.png")
      if plots.plot_metric_per_env(by_label, column, f"{setting}: {description}", path):
        files.append(path)
    labels = fig1_labels(by_label)
    path = os.path.join(out, f"{prefix}fig1_{_safe(setting)}.png")
    if labels and plots.plot_metrics_by_env({label: by_label[label] for label in labels}, FIG1_METRICS,
                                            f"{setting}: backups without DR3 (the paper's Fig. 1)", path):
      files.append(path)


def _continuous_report(runs: Sequence[Run], out: str, *, warn: Callable[[str], None], files: List[str],
                       reps: int = 2000, seed: int = 0) -> None:
  groups = tables.group_runs(runs, "continuous")
  if not groups:
    return
  by_setting = tables.label_scores(groups, "continuous", warn)
  all_rows = []
  for setting, by_label in by_setting.items():
    summaries = tables.per_run_summaries(by_label)
    all_rows += summaries
    path = os.path.join(out, f"per_task_{_safe(setting)}.csv")
    tables.write_per_run_csv(summaries, "task", path)
    files.append(path)
    curves_path = os.path.join(out, f"d4rl_curves_{_safe(setting)}.png")
    runs_by_label = {label: {env: s.runs for env, s in ls.envs.items()} for label, ls in by_label.items()}
    if plots.plot_metric_per_env(runs_by_label, tables.SCORE_COLUMN, f"{setting}: evaluation return",
                                 curves_path):
      files.append(curves_path)
  if all_rows:
    csv_path, md_path = os.path.join(out, "table2.csv"), os.path.join(out, "table2.md")
    tables.write_table2(all_rows, csv_path, md_path)
    files += [md_path, csv_path]
  _diagnostic_plots(groups, out, "continuous_", files)
  files += actor_study.write_report(runs, out, warn=warn, reps=reps, seed=seed)  # the actor-regularization study


def build_report(run_patterns: Sequence[str], out_dir: Optional[str] = None, *, seed: int = 0,
                 reps: int = aggregate.DEFAULT_REPS, curve_reps: int = aggregate.DEFAULT_REPS,
                 warn: Callable[[str], None] = lambda message: print(message, file=sys.stderr)) -> List[str]:
  """Reads the runs, writes every table and plot into out_dir; returns the written paths.

  `warn` receives the warning and progress lines (stderr by default).
  """
  if reps < 1 or curve_reps < 1:
    raise ConfigError(f"--reps and --curve_reps must be >= 1 bootstrap replications; got {reps}, {curve_reps}.")
  runs = load_runs(run_patterns, warn=warn)
  out = os.path.abspath(out_dir or default_out_dir(runs))
  os.makedirs(out, exist_ok=True)
  files: List[str] = []
  compact = _atari_report(runs, out, seed=seed, reps=reps, curve_reps=curve_reps, warn=warn, files=files)
  _continuous_report(runs, out, warn=warn, files=files, reps=reps, seed=seed)
  print(f"Report of {len(runs)} run(s) in {out}:")
  for path in files:
    print(f"  {os.path.relpath(path, out)}")
  if compact:
    print(compact)
  return files


FLAGS = flags.FLAGS


def define_flags():
  """Flags of the command line; defined only when run as a program, so importing this module for its
  functions never collides with another command's flags (absl flags are global)."""
  flags.DEFINE_multi_string("runs", None, "Glob(s) of run folders, e.g. 'runs/**' (quote it); a folder holding "
                            "run folders at any depth works too.")
  flags.DEFINE_string("out", None, "Output folder (default: <common parent of the run folders>/report).")
  flags.DEFINE_integer("seed", 0, "Seed of the bootstrap resampling (results are reproducible for a seed).")
  flags.DEFINE_integer("reps", aggregate.DEFAULT_REPS, "Bootstrap replications for the table CIs (see "
                       "aggregate.DEFAULT_REPS for how CIs move with it; rliable's paper used 50000).")
  flags.DEFINE_integer("curve_reps", aggregate.DEFAULT_REPS, "Bootstrap replications per learning-curve plot.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS.runs:
    raise app.UsageError("--runs is required, e.g. --runs='runs/**'.")
  try:
    build_report(FLAGS.runs, FLAGS.out, seed=FLAGS.seed, reps=FLAGS.reps, curve_reps=FLAGS.curve_reps)
  except (DataError, ConfigError) as e:
    raise SystemExit(f"ERROR: {e}") from None


if __name__ == "__main__":
  define_flags()
  app.run(main)
