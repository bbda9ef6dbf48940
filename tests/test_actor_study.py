"""The actor-study protocol: last-10 (AntMaze last-5) scores, improvement % per domain, rliable table, the
validation/train and noisy-evaluation ratios, and the report hook; every number against a direct computation."""
import csv
import os

import numpy as np
import pytest

from batch_rl_dr3 import reference_scores as scores
from batch_rl_dr3.analysis import actor_study
from batch_rl_dr3.analysis import aggregate
from batch_rl_dr3.analysis import report
from batch_rl_dr3.analysis import runs as runs_lib
from tests.test_report import write_run

ITERATIONS = 20
REF = scores.D4RL_REFERENCE_SCORES


def raw_for(task, percent):
  low, high = REF[task]
  return low + percent / 100.0 * (high - low)


def study_rows(task, level, seed, *, ratio=None, noisy=None):
  """Normalized score `level + iteration` (so the last-k mean is known), per-iteration metrics."""
  rows = []
  for i in range(ITERATIONS):
    row = {"iteration": i, "gradient_steps": (i + 1) * 100,
           "eval/return": raw_for(task, level + i + seed)}
    if ratio is not None:  # validation = ratio * train, train 2.0, except the first iteration: a 50x outlier
      row["eval/actor_train/pca_rank"] = 2.0
      row["eval/actor_validation/pca_rank"] = 2.0 * (50.0 if i == 0 else ratio)
      row["eval/actor_train/dead_neurons_frac"] = 0.0  # clipped to 1e-3
      row["eval/actor_validation/dead_neurons_frac"] = 0.001 * ratio
    if noisy is not None:
      row["eval/action_noise/return"] = raw_for(task, noisy * (level + i + seed))
    row["eval/plasticity/bc_loss"] = 0.1 + 0.01 * seed
    rows.append(row)
  return rows


def expected_score(task, level, seed):
  k = 5 if task.startswith("antmaze") else 10
  return float(np.mean([level + i + seed for i in range(ITERATIONS - k, ITERATIONS)]))


LEVELS = {  # (agent, label) -> task -> level
    ("rebrac", "ReBRAC"): {"hopper-medium-v2": 40, "walker2d-medium-v2": 50, "antmaze-umaze-v2": 60,
                           "pen-cloned-v1": 20},
    ("rebrac", "ReBRAC+LN+DO"): {"hopper-medium-v2": 44, "walker2d-medium-v2": 60, "antmaze-umaze-v2": 54,
                                 "pen-cloned-v1": 30},
    ("iql", "IQL"): {"hopper-medium-v2": 30},
    ("iql", "IQL+LN"): {"hopper-medium-v2": 33},
}


@pytest.fixture
def run_tree(tmp_path):
  for (agent, label), per_task in LEVELS.items():
    for task, level in per_task.items():
      for seed in (0, 1):
        info = {"domain": "continuous", "task": task, "agent": agent, "label": label, "seed": seed}
        write_run(str(tmp_path / f"{label}_{task}_{seed}"), info,
                  study_rows(task, level, seed, ratio=1.5 if "+" in label else 3.0, noisy=0.5))
  return tmp_path


def test_scores_and_improvements(run_tree):
  runs = runs_lib.load_runs([str(run_tree / "*")])
  by_cell = actor_study.cells(runs)
  cell = by_cell[("rebrac", "ReBRAC", "antmaze-umaze-v2")]
  np.testing.assert_allclose(cell.scores, [expected_score("antmaze-umaze-v2", 60, s) for s in (0, 1)])
  assert expected_score("antmaze-umaze-v2", 60, 0) == 60 + 17  # mean of the last 5 of 60..79
  assert expected_score("hopper-medium-v2", 40, 0) == 40 + 14.5  # mean of the last 10
  rows = {(r.algorithm, r.label): r for r in actor_study.study_rows(by_cell, reps=50)}
  mean = lambda agent, label, tasks: np.mean([np.mean([expected_score(t, LEVELS[(agent, label)][t], s)
                                                       for s in (0, 1)]) for t in tasks])
  loco = ["hopper-medium-v2", "walker2d-medium-v2"]
  base, variant = rows[("rebrac", "ReBRAC")], rows[("rebrac", "ReBRAC+LN+DO")]
  assert base.is_baseline and not base.improvements and not variant.is_baseline
  np.testing.assert_allclose(variant.averages["locomotion"], mean("rebrac", "ReBRAC+LN+DO", loco))
  gain = 100 * (mean("rebrac", "ReBRAC+LN+DO", loco) - mean("rebrac", "ReBRAC", loco)) / mean("rebrac", "ReBRAC", loco)
  np.testing.assert_allclose(variant.improvements["locomotion"], gain)
  np.testing.assert_allclose(variant.improvements["antmaze"], 100 * (54 - 60) / (60 + 17.5))
  np.testing.assert_allclose(variant.improvements["adroit"], 100 * 10 / (20 + 15))
  all_tasks = list(LEVELS[("rebrac", "ReBRAC")])
  np.testing.assert_allclose(variant.improvements["all"], 100 * (
      mean("rebrac", "ReBRAC+LN+DO", all_tasks) / mean("rebrac", "ReBRAC", all_tasks) - 1))
  assert variant.datasets == {"locomotion": 2, "antmaze": 1, "adroit": 1, "all": 4}
  # IQL variants are compared with IQL, not with ReBRAC.
  np.testing.assert_allclose(rows[("iql", "IQL+LN")].improvements["all"], 100 * 3 / (30 + 15))


def test_rliable_table_equals_aggregate_on_the_score_matrix(run_tree):
  by_cell = actor_study.cells(runs_lib.load_runs([str(run_tree / "*")]))
  table = actor_study.rliable_table(by_cell, reps=200, seed=1)
  tasks = sorted(LEVELS[("rebrac", "ReBRAC")])
  matrix = np.array([[expected_score(t, LEVELS[("rebrac", "ReBRAC")][t], s) for t in tasks] for s in (0, 1)])
  direct = aggregate.aggregate_table({"rebrac / ReBRAC": matrix}, reps=200, seed=1)
  for name in aggregate.AGGREGATE_FUNCTIONS:
    assert table[name]["rebrac / ReBRAC"] == direct[name]["rebrac / ReBRAC"]
  np.testing.assert_allclose(table["Mean"]["rebrac / ReBRAC"].point, matrix.mean())
  assert set(table["Mean"]) == {"rebrac / ReBRAC", "rebrac / ReBRAC+LN+DO", "iql / IQL", "iql / IQL+LN"}


def test_ratios_follow_the_study():
  run = runs_lib.Run("x", {"domain": "continuous", "task": "hopper-medium-v2", "label": "L", "setting": "default"},
                     {k: np.array([r.get(k, np.nan) for r in study_rows("hopper-medium-v2", 40, 0, ratio=1.5,
                                                                          noisy=0.5)], float)
                      for k in study_rows("hopper-medium-v2", 40, 0, ratio=1.5, noisy=0.5)[0]})
  assert actor_study.validation_train_ratio(run, "pca_rank") == pytest.approx(1.5)
  # train 0 is clipped to 1e-3: 0.0015 / 1e-3
  assert actor_study.validation_train_ratio(run, "dead_neurons_frac") == pytest.approx(1.5)
  assert np.isnan(actor_study.validation_train_ratio(run, "feature_norms"))
  assert actor_study.noise_ratio(run, "action_noise") == pytest.approx(0.5)
  assert np.isnan(actor_study.noise_ratio(run, "state_noise"))
  # the first iteration's 50x ratio is dropped (>= 10); it is outside the last 10 anyway: check on a short run
  short = runs_lib.Run("y", run.info, {k: v[:3] for k, v in run.metrics.items()})
  assert actor_study.validation_train_ratio(short, "pca_rank") == pytest.approx(1.5)


def test_report_writes_the_actor_study_files(run_tree, tmp_path):
  out = tmp_path / "report"
  files = report.build_report([str(run_tree / "*")], str(out), reps=100, curve_reps=10, warn=lambda m: None)
  names = {os.path.basename(f) for f in files}
  assert {"actor_study.md", "actor_study.csv", "actor_diagnostics.csv", "actor_diagnostics_ratios.png"} <= names
  with open(out / "actor_diagnostics.csv") as f:
    diag = {(r["label"], r["task"]): r for r in csv.DictReader(f)}
  assert float(diag[("ReBRAC+LN+DO", "pen-cloned-v1")]["pca_rank_ratio"]) == pytest.approx(1.5)
  assert float(diag[("ReBRAC", "pen-cloned-v1")]["pca_rank_ratio"]) == pytest.approx(3.0)
  assert float(diag[("ReBRAC", "pen-cloned-v1")]["action_noise_ratio"]) == pytest.approx(0.5)
  assert float(diag[("ReBRAC", "pen-cloned-v1")]["plasticity_bc_loss"]) == pytest.approx(0.105)  # seeds 0, 1
  md = (out / "actor_study.md").read_text()
  assert "| rebrac | ReBRAC+LN+DO |" in md and "base" in md


def test_probability_of_improvement_by_hand(run_tree):
  by_cell = actor_study.cells(runs_lib.load_runs([str(run_tree / "*")]))
  rows = {(r.algorithm, r.label): r for r in actor_study.study_rows(by_cell, reps=200)}
  assert rows[("rebrac", "ReBRAC")].probability_of_improvement is None
  # Mann-Whitney by hand, per dataset: P(x > y) + P(x = y) / 2 over all pairs of runs, then mean over datasets.
  tasks = sorted(LEVELS[("rebrac", "ReBRAC")])
  per_task = []
  for t in tasks:
    x = [expected_score(t, LEVELS[("rebrac", "ReBRAC+LN+DO")][t], s) for s in (0, 1)]
    y = [expected_score(t, LEVELS[("rebrac", "ReBRAC")][t], s) for s in (0, 1)]
    per_task.append(np.mean([(a > b) + 0.5 * (a == b) for a in x for b in y]))
  estimate = rows[("rebrac", "ReBRAC+LN+DO")].probability_of_improvement
  assert estimate.point == pytest.approx(np.mean(per_task))  # 3 of 4 datasets improve, AntMaze does not: 0.75
  assert np.mean(per_task) == 0.75 and estimate.lower <= estimate.point <= estimate.upper
