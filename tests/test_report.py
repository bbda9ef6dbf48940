"""The report end to end on synthetic run folders in the train.py layout, checked against direct computations."""
import csv
import json
import os
import subprocess
import sys
import zlib

import matplotlib.image as mpimg
import numpy as np
import pytest
import scipy.stats
from rliable import library as rly
from rliable import metrics as rly_metrics

from batch_rl_dr3.analysis import report, runs as runs_lib
from batch_rl_dr3.errors import DataError

# (random, human) typed from dqn_zoo/atari_data.py, independent of reference_scores.py's table.
HAND_REFERENCE = {"Pong": (-20.7, 14.6), "Breakout": (1.7, 30.5), "Asterix": (210.0, 8503.3)}
LABELS = {"CQL": ("cql_qr", 0.0), "CQL+DR3": ("cql_qr", 0.1)}
SETTINGS = ("1pct", "5pct")
SEEDS = (0, 1)
NUM_ITERATIONS = 4
STEPS_PER_ITERATION = 250
REPS = 300


def write_run(base_dir, info, rows, header=None):
  os.makedirs(base_dir, exist_ok=True)
  with open(os.path.join(base_dir, "run_info.json"), "w") as f:
    json.dump(info, f)
  with open(os.path.join(base_dir, "config.gin"), "w") as f:
    f.write("# synthetic\n")
  header = header or list(rows[0])
  with open(os.path.join(base_dir, "metrics.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=header, restval="")
    w.writeheader()
    w.writerows(rows)


def synthetic_return(game, label, setting, seed, iteration):
  low, high = HAND_REFERENCE.get(game, (0.0, 100.0))
  rng = np.random.RandomState(zlib.crc32(repr((game, label, setting, seed, iteration)).encode()))
  progress = (iteration + 1) / NUM_ITERATIONS * (0.6 if label == "CQL" else 0.9)
  return float(low + (high - low) * (progress + 0.2 * rng.rand()))


def atari_rows(game, label, setting, seed, num_iterations=NUM_ITERATIONS):
  rows = []
  for it in range(num_iterations):
    rows.append({"iteration": it, "gradient_steps": (it + 1) * STEPS_PER_ITERATION,
                 "eval/return": synthetic_return(game, label, setting, seed, it), "eval/num_episodes": 3,
                 "train/td_loss": 1.0 / (it + 1), "train/dot_product": 10.0 * (it + 1) + seed,
                 "train/srank": 100 - it - seed})
  return rows


@pytest.fixture(scope="module")
def run_tree(tmp_path_factory):
  root = tmp_path_factory.mktemp("report") / "runs"
  for setting in SETTINGS:
    for label, (agent, c0) in LABELS.items():
      for game in HAND_REFERENCE:
        for seed in SEEDS:
          info = {"domain": "atari", "game": game, "agent": agent, "label": label, "dr3_coefficient": c0,
                  "setting": setting, "seed": seed, "data_run": 1}
          write_run(root / setting / f"{agent}_{c0}_{game}_{seed}", info, atari_rows(game, label, setting, seed))
  # A game without a human score, run by one label only: per-game table only.
  write_run(root / "1pct" / "pooyan", {"domain": "atari", "game": "Pooyan", "agent": "cql_qr", "label": "CQL",
                                        "dr3_coefficient": 0.0, "setting": "1pct", "seed": 0},
            atari_rows("Pooyan", "CQL", "1pct", 0))
  # Broken folder: truncated JSON.
  broken = root / "1pct" / "broken"
  os.makedirs(broken)
  (broken / "run_info.json").write_text('{"domain": "atari", "game": ')
  (broken / "metrics.csv").write_text("iteration,gradient_steps\n0,1\n")
  # Continuous runs: two seeds, two labels on one D4RL task.
  for label, agent, c0 in (("CQL", "cql_sac", 0.0), ("CQL+DR3", "cql_sac", 0.001)):
    for seed in SEEDS:
      rows = [{"iteration": it, "gradient_steps": (it + 1) * 10, "eval/return": 1.0 + it + seed + (c0 > 0),
               "train/dot_product": float(it)} for it in range(3)]
      write_run(root / "kitchen" / f"{agent}_{c0}_{seed}",
                {"domain": "continuous", "task": "kitchen-mixed-v0", "agent": agent, "label": label,
                 "dr3_coefficient": c0, "seed": seed}, rows)
  return root


@pytest.fixture(scope="module")
def built_report(run_tree, tmp_path_factory):
  out = tmp_path_factory.mktemp("out")
  warnings = []
  files = report.build_report([str(run_tree / "**")], str(out), seed=3, reps=REPS, curve_reps=50,
                              warn=warnings.append)
  return out, files, warnings


def hand_normalized(game, raw):
  low, high = HAND_REFERENCE[game]
  return 100.0 * (raw - low) / (high - low)


def expected_matrix(setting, label, summary):
  matrix = np.zeros((len(SEEDS), len(HAND_REFERENCE)))
  for g, game in enumerate(sorted(HAND_REFERENCE)):
    for r, seed in enumerate(SEEDS):
      curve = [hand_normalized(game, synthetic_return(game, label, setting, seed, it))
               for it in range(NUM_ITERATIONS)]
      matrix[r, g] = np.mean(curve) if summary == "average" else curve[-1]
  return matrix


def read_csv(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def test_report_writes_every_file_and_warns_about_the_broken_folder(built_report):
  out, files, warnings = built_report
  names = sorted(os.path.relpath(f, out) for f in files)
  expected = ["table1.md", "table1.csv", "table2.md", "table2.csv", "per_task_default.csv",
              "d4rl_curves_default.png", "continuous_dot_product_default.png"]
  for setting in SETTINGS:
    expected += [f"per_game_{setting}.md", f"per_game_{setting}.csv", f"iqm_curves_{setting}.png",
                 f"dot_product_{setting}.png", f"srank_{setting}.png"]
  assert sorted(expected) == names
  assert all(os.path.isfile(f) for f in files)
  broken = [w for w in warnings if "broken" in w]
  assert len(broken) == 1 and "run_info.json" in broken[0] and "not valid JSON" in broken[0]


def test_table1_numbers_equal_a_direct_computation(built_report):
  out, _, _ = built_report
  rows = read_csv(out / "table1.csv")
  iqm_rows = [r for r in rows if r["aggregate"] == "IQM"]
  assert len(iqm_rows) == len(SETTINGS) * len(LABELS) * 2
  for row in iqm_rows:
    matrix = expected_matrix(row["setting"], row["label"], row["summary"])
    assert float(row["point"]) == pytest.approx(scipy.stats.trim_mean(matrix, 0.25, axis=None), rel=1e-12)
    np.random.seed(3)  # the report's --seed; rliable's bootstrap draws from the global RNG
    _, ci = rly.get_interval_estimates({"x": matrix}, lambda x: np.array([rly_metrics.aggregate_iqm(x)]),
                                       reps=REPS)
    assert float(row["ci_lower"]) == pytest.approx(ci["x"][0, 0], rel=1e-12)
    assert float(row["ci_upper"]) == pytest.approx(ci["x"][1, 0], rel=1e-12)
    assert (int(row["num_runs"]), int(row["num_games"])) == (2, 3)
    assert int(row["gradient_steps"]) == NUM_ITERATIONS * STEPS_PER_ITERATION
    if row["summary"] == "average" and row["setting"] == "1pct" and row["label"] == "CQL+DR3":
      assert float(row["paper_point"]) == 56.9
    if row["summary"] == "final":
      assert row["paper_point"] == ""
  median_row = [r for r in rows if (r["setting"], r["label"], r["summary"], r["aggregate"]) ==
                ("5pct", "CQL", "final", "Median")][0]
  assert float(median_row["point"]) == pytest.approx(
      np.median(expected_matrix("5pct", "CQL", "final").mean(axis=0)), rel=1e-12)
  md = (out / "table1.md").read_text()
  assert "**paper** 56.9 (52.5, 61.2)" in md and "Pooyan" in md
  assert "Not the paper's 17 games (missing: BeamRider," in md  # our 3 games are a subset


def test_per_game_table_has_per_seed_and_mean_rows(built_report):
  out, _, _ = built_report
  rows = read_csv(out / "per_game_1pct.csv")
  pong = [r for r in rows if r["game"] == "Pong" and r["label"] == "CQL+DR3"]
  assert [r["seed"] for r in pong] == ["0", "1", "mean"]
  finals = [synthetic_return("Pong", "CQL+DR3", "1pct", s, NUM_ITERATIONS - 1) for s in SEEDS]
  averages = [np.mean([synthetic_return("Pong", "CQL+DR3", "1pct", s, it) for it in range(NUM_ITERATIONS)])
              for s in SEEDS]
  assert [float(r["final_return"]) for r in pong[:2]] == pytest.approx(finals, rel=1e-12)
  assert float(pong[2]["average_return"]) == pytest.approx(np.mean(averages), rel=1e-12)
  assert float(pong[2]["final_normalized"]) == pytest.approx(
      np.mean([hand_normalized("Pong", f) for f in finals]), rel=1e-12)
  pooyan = [r for r in rows if r["game"] == "Pooyan"]
  assert len(pooyan) == 2 and pooyan[0]["final_normalized"] == ""
  assert "Pooyan" in (out / "per_game_1pct.md").read_text()


def test_table2_uses_d4rl_normalization(built_report):
  out, _, _ = built_report
  rows = {r["label"]: r for r in read_csv(out / "table2.csv")}
  # kitchen: REF_MIN 0, REF_MAX 4; final returns 3+seed (+1 with DR3) -> mean 3.5 / 4.5 of 4.
  assert float(rows["CQL"]["final_normalized_mean"]) == pytest.approx(100 * 3.5 / 4)
  assert float(rows["CQL+DR3"]["final_normalized_mean"]) == pytest.approx(100 * 4.5 / 4)
  assert float(rows["CQL"]["average_normalized_mean"]) == pytest.approx(100 * 2.5 / 4)
  # The paper's kitchen values are printed on our scale; ours (87.5, 112.5) lie outside 14.6 ± 20.5, 37.0 ± 8.0.
  assert float(rows["CQL"]["paper_final_normalized_mean"]) == 14.6
  assert float(rows["CQL"]["paper_final_normalized_spread"]) == 20.5
  assert rows["CQL+DR3"]["paper_printed"] == "37 ± 8"
  assert rows["CQL"]["final_within_paper_spread"] == rows["CQL+DR3"]["final_within_paper_spread"] == "no"
  md = (out / "table2.md").read_text()
  assert "**paper** 14.6 ± 20.5 (printed 14.6 ± 20.5): ours outside its spread" in md
  assert "BRAC on the 15 MuJoCo tasks" not in md  # no BRAC runs here


# Table 2 of the DR3 paper exactly as our copy of its text prints it (../shared/papers/dr3-paper.txt).
PAPER_TABLE2_TEXT = """\
kitchen-mixed 14.6 ± 20.5 37.0 ± 8.0
kitchen-partial 29.6 ± 19.6 43.5 ± 1.9
kitchen-complete 22.3 ± 17.5 24.8 ± 15.3
antmaze-med-diverse 0.7 ± 0.1 0.9 ± 0.1
antmaze-med-play 0.5 ± 0.4 0.4 ± 0.3
antmaze-lar-diverse 0.1 ± 0.0 0.3 ± 0.16
antmaze-lar-play 0.06 ± 0.09 0.1 ± 0.01
"""


def test_table2_paper_values_on_one_scale_match_the_paper_text():
  from batch_rl_dr3.analysis import paper_results  # pylint: disable=g-import-not-at-top
  names = {"med": "medium", "lar": "large"}
  for line in PAPER_TABLE2_TEXT.splitlines():
    name, cql, _, cql_sd, dr3, _, dr3_sd = line.split()
    parts = name.split("-")
    task = "-".join([parts[0]] + [names.get(p, p) for p in parts[1:]]) + "-v0"
    # The paper prints antmaze as a success fraction and kitchen as a percentage: our scale is the percentage.
    factor = 100.0 if task.startswith("antmaze") else 1.0
    for label, mean, sd in (("CQL", cql, cql_sd), ("CQL+DR3", dr3, dr3_sd)):
      value = paper_results.table2_value(task, label)
      assert value.mean == pytest.approx(float(mean) * factor) and value.spread == pytest.approx(float(sd) * factor)
      assert value.printed == f"{float(mean):g} ± {float(sd):g}"
  assert len(paper_results.DR3_TABLE2_PRINTED) == 14
  ant = paper_results.table2_value("antmaze-medium-diverse-v0", "CQL")  # printed 0.7 ± 0.1
  assert ant.contains(60.0) and ant.contains(80.0) and not ant.contains(59.0) and not ant.contains(0.7)
  assert paper_results.table2_value("d4rl_antmaze/large-diverse-v0", "CQL").contains(10.0)  # printed 0.1 ± 0.0
  assert not paper_results.table2_value("antmaze-large-diverse-v0", "CQL").contains(10.5)


def test_brac_medians_over_the_15_mujoco_tasks():
  from batch_rl_dr3.analysis import paper_results, tables  # pylint: disable=g-import-not-at-top
  assert len(paper_results.BRAC_MUJOCO_TASKS) == 15
  rows = []
  for i, task in enumerate(paper_results.BRAC_MUJOCO_TASKS):
    for label, shift in (("BRAC", 0.0), ("BRAC+DR3", 10.0 + i)):
      rows.append(tables.PerRunSummary("default", task, label, "mean", 10, 100, 0.0, 0.0, float(i * 3) + shift,
                                       float(i) + shift / 2))
  # A 16th task and an incomplete label are ignored.
  rows.append(tables.PerRunSummary("default", "hopper-medium-v2", "BRAC", "mean", 10, 100, 0, 0, 1e6, 1e6))
  rows.append(tables.PerRunSummary("default", "hopper-medium-v0", "SAC", "mean", 10, 100, 0, 0, 5.0, 5.0))
  medians = {m.label: m for m in tables.brac_medians(rows)}
  assert set(medians) == {"BRAC", "BRAC+DR3"}
  # By hand: BRAC finals 0, 3, ..., 42 -> median 21; BRAC+DR3 finals 3i + 10 + i -> median at i = 7: 38.
  assert medians["BRAC"].final == 21.0 and medians["BRAC+DR3"].final == 38.0
  assert medians["BRAC"].average == 7.0 and medians["BRAC+DR3"].average == 7 + (10 + 7) / 2
  text = "\n".join(tables.brac_median_lines(rows))
  assert "| BRAC+DR3 | 38.0 | 15.5 | +17.0 (+13.8) | +8.5 (+8.1) |" in text
  assert "improves final median normalized score performance by 13.8 and stability by 8.1" in text


def test_pngs_are_valid_images(built_report):
  out, files, _ = built_report
  for path in files:
    if path.endswith(".png"):
      image = mpimg.imread(path)
      assert image.ndim == 3 and image.shape[2] in (3, 4) and min(image.shape[:2]) > 100
      assert image.std() > 0  # something was drawn


def test_runs_of_different_lengths_use_the_common_prefix(tmp_path):
  for seed, length in ((0, 5), (1, 3)):
    write_run(tmp_path / f"s{seed}", {"domain": "atari", "game": "pong", "agent": "rem", "label": "REM",
                                       "setting": "1pct", "seed": seed},
              atari_rows("Pong", "REM", "1pct", seed, num_iterations=length))
  warnings = []
  report.build_report([str(tmp_path / "*")], str(tmp_path / "out"), reps=50, curve_reps=20,
                      warn=warnings.append)
  assert any("common prefix" in w for w in warnings)
  rows = read_csv(tmp_path / "out" / "per_game_1pct.csv")
  assert {r["num_iterations"] for r in rows} == {"3"}
  seed0 = [r for r in rows if r["seed"] == "0"][0]
  assert float(seed0["final_return"]) == pytest.approx(synthetic_return("Pong", "REM", "1pct", 0, 2))


def test_single_run_still_gets_a_bootstrap_interval_over_games(tmp_path):
  for game in HAND_REFERENCE:
    write_run(tmp_path / game, {"domain": "atari", "game": game, "agent": "rem", "label": "REM",
                                "setting": "5pct", "seed": 0}, atari_rows(game, "REM", "5pct", 0))
  report.build_report([str(tmp_path)], str(tmp_path / "out"), reps=200, curve_reps=20, warn=lambda _: None)
  row = [r for r in read_csv(tmp_path / "out" / "table1.csv")
         if (r["aggregate"], r["summary"]) == ("IQM", "final")][0]
  # One seed: rliable resamples games too, so the interval has a width (runs-only resampling gives none).
  assert float(row["ci_lower"]) < float(row["ci_upper"])
  assert float(row["ci_lower"]) <= float(row["point"]) <= float(row["ci_upper"])


def test_run_discovery_patterns(run_tree):
  every_run = runs_lib.find_run_dirs([str(run_tree / "**")])
  assert len(every_run) == 2 * 2 * 3 * 2 + 1 + 1 + 4  # atari + Pooyan + broken + continuous
  assert runs_lib.find_run_dirs([str(run_tree)]) == every_run  # a parent folder is searched below
  assert runs_lib.find_run_dirs([str(run_tree / "*" / "*" / "metrics.csv")]) == every_run
  assert len(runs_lib.find_run_dirs([str(run_tree / "5pct" / "*_Pong_*")])) == 4


def test_run_folders_behind_urls_are_read_through_gfile(run_tree):
  # file:// goes through tf.io.gfile exactly as gs:// does.
  local = runs_lib.find_run_dirs([str(run_tree / "5pct" / "*_Pong_*")])
  remote = runs_lib.find_run_dirs([f"file://{run_tree}/5pct/*_Pong_*"])
  assert remote == [f"file://{path}" for path in local]
  from_url, from_disk = runs_lib.read_run(remote[0]), runs_lib.read_run(local[0])
  assert from_url.info == from_disk.info
  assert from_url.metrics.keys() == from_disk.metrics.keys()
  for name in from_disk.metrics:
    np.testing.assert_array_equal(from_url.metrics[name], from_disk.metrics[name])
  assert len(runs_lib.find_run_dirs([f"file://{run_tree}"])) == len(runs_lib.find_run_dirs([str(run_tree)]))


def test_nothing_usable_is_one_clear_error(tmp_path):
  (tmp_path / "a").mkdir()
  (tmp_path / "a" / "metrics.csv").write_text("iteration,gradient_steps\n0,1\n")
  with pytest.raises(DataError, match="No usable run folder"):
    report.build_report([str(tmp_path / "*")], warn=lambda _: None)


@pytest.mark.parametrize("content,message", [
    ("iteration,eval/return\n0,1\n", "no 'gradient_steps' column"),
    ("iteration,gradient_steps,eval/return\n0,1,2\n1,2\n", "line 3 has 2 fields"),
    ("iteration,gradient_steps,eval/return\n0,1,abc\n", "'eval/return': 'abc' is not a number"),
    ("iteration,gradient_steps\n", "no iteration rows"),
    ("iteration,gradient_steps\n0,1\n0,2\n", "same iteration"),
])
def test_broken_metrics_csv_names_the_file_and_the_problem(tmp_path, content, message):
  write_run(tmp_path, {"domain": "atari", "game": "Pong", "label": "DQN", "setting": "1pct"},
            [{"iteration": 0, "gradient_steps": 1}])
  (tmp_path / "metrics.csv").write_text(content)
  with pytest.raises(DataError, match=message) as e:
    runs_lib.read_run(str(tmp_path))
  assert "metrics.csv" in str(e.value)


def test_unknown_game_and_missing_label_in_run_info(tmp_path):
  rows = [{"iteration": 0, "gradient_steps": 1}]
  write_run(tmp_path / "a", {"domain": "atari", "game": "Pongg", "label": "DQN"}, rows)
  with pytest.raises(DataError, match="run_info.json.*Pongg"):
    runs_lib.read_run(str(tmp_path / "a"))
  write_run(tmp_path / "b", {"domain": "atari", "game": "ms_pacman", "agent": "rem", "dr3_coefficient": 0.1}, rows)
  run = runs_lib.read_run(str(tmp_path / "b"))
  assert (run.env, run.label, run.setting) == ("MsPacman", "REM+DR3 (c0=0.1)", "default")
  # A run with label_parts (written by the experiments) gets the one label rule's label.
  write_run(tmp_path / "c", {"domain": "atari", "game": "Pong", "agent": "cql_qr", "label_parts": {
      "settings": {"cql_alpha": 0.1}, "penalties": [["DR3", {"c0": 0.03, "form": "dopamine"}]]}}, rows)
  assert runs_lib.read_run(str(tmp_path / "c")).label == "CQL+DR3 (cql_alpha=0.1, c0=0.03, form=dopamine)"


def test_command_line(run_tree, tmp_path):
  out = tmp_path / "cli"
  result = subprocess.run([sys.executable, "-m", "batch_rl_dr3.analysis.report",
                           f"--runs={run_tree}/5pct/*_Pong_*", f"--out={out}", "--reps=50", "--curve_reps=10"],
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "table1.md" in result.stdout and "5pct" in result.stdout
  assert (out / "table1.md").exists() and (out / "iqm_curves_5pct.png").exists()
  assert {r["num_games"] for r in read_csv(out / "table1.csv")} == {"1"}
  bad = subprocess.run([sys.executable, "-m", "batch_rl_dr3.analysis.report", f"--runs={tmp_path}/nothing*"],
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode != 0 and "No usable run folder" in bad.stderr


class _TinyAtariExperiment:
  """Just enough of runner.Experiment for the real runner to write a run folder the report must read."""

  def __init__(self, seed):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._tf = tf
    self.seed = seed
    self.step = tf.Variable(0, dtype=tf.int64)

  def trackables(self):
    return {"step": self.step}

  def on_iteration_start(self, iteration):
    pass

  def train_step(self):
    self.step.assign_add(1)
    return {"dot_product": self._tf.cast(self.step, self._tf.float32)}

  def diagnostics(self, iteration):
    return {"srank": 50.0 - iteration}

  def evaluate(self, iteration):
    return {} if iteration == 1 else {"return": -20.7 + 3.53 * (iteration + self.seed)}  # iteration 1 not evaluated

  def run_info(self):
    return {"domain": "atari", "game": "Pong", "agent": "dqn", "label": "DQN", "dr3_coefficient": 0.0,
            "setting": "1pct", "data_run": 1}


def test_reads_run_folders_written_by_the_real_runner(tmp_path):
  from batch_rl_dr3 import runner  # pylint: disable=g-import-not-at-top
  for seed in (0, 1):
    runner.run_experiment(str(tmp_path / "runs" / f"dqn_{seed}"), create_experiment=_TinyAtariExperiment,
                          num_iterations=3, gradient_steps_per_iteration=2, seed=seed, tensorboard=False)
  files = report.build_report([str(tmp_path / "runs" / "*")], reps=100, curve_reps=20, warn=print)
  out = tmp_path / "runs" / "report"  # the default: <common parent>/report
  assert str(out / "table1.md") in files and (out / "dot_product_1pct.png").exists()
  rows = {r["seed"]: r for r in read_csv(out / "per_game_1pct.csv")}
  for seed in (0, 1):
    returns = [-20.7 + 3.53 * seed, -20.7 + 3.53 * (2 + seed)]  # iterations 0 and 2
    assert float(rows[str(seed)]["final_return"]) == pytest.approx(returns[-1])
    assert float(rows[str(seed)]["average_return"]) == pytest.approx(np.mean(returns))
    assert float(rows[str(seed)]["gradient_steps"]) == 6


def test_paper_values_are_found_for_our_names():
  from batch_rl_dr3.analysis import paper_results  # pylint: disable=g-import-not-at-top
  assert paper_results.table1_value("5pct", "CQL+DR3").format() == "105.7 (101.9, 110.9)"
  assert paper_results.table1_value("10pct", "REM+DR3") == paper_results.table1_value("first10pct", "REM+DR3")
  assert paper_results.table1_value("1pct", "DQN") is None
  assert paper_results.table2_value("d4rl_antmaze/large-diverse-v0", "CQL+DR3").mean == pytest.approx(30.0)
  assert paper_results.table2_value("kitchen-partial-v0", "CQL").mean == 29.6
  assert paper_results.table2_value("hopper-medium-v2", "CQL") is None


def test_fig1_draws_the_four_backups_without_dr3(tmp_path):
  backups = {"DQN (monte_carlo)": "monte_carlo", "DQN (sarsa)": "sarsa", "DQN (behavior_policy)": "behavior_policy",
             "DQN": "q_learning", "DQN+DR3": "q_learning"}
  for label, backup in backups.items():
    for game in ("Breakout", "Seaquest"):
      for seed in (0, 1):
        c0 = 0.001 if "DR3" in label else 0.0
        rows = [{"iteration": it, "gradient_steps": (it + 1) * 100, "train/dot_product": float(it * (c0 == 0)),
                 "train/fixed_batch/q_data": 0.1 * it} for it in range(3)]
        write_run(tmp_path / "runs" / f"{backup}{c0}_{game}_{seed}",
                  {"domain": "atari", "game": game, "agent": "dqn", "label": label, "backup": backup,
                   "dr3_coefficient": c0, "setting": "small", "seed": seed}, rows)
  runs = runs_lib.load_runs([str(tmp_path / "runs" / "*")])
  groups = report.tables.group_runs(runs, "atari")
  # The DR3 run is no part of Fig. 1; every backup without DR3 is.
  assert report.fig1_labels(groups["small"]) == sorted(set(backups) - {"DQN+DR3"})
  assert report.fig1_labels({"DQN": groups["small"]["DQN"], "DQN+DR3": groups["small"]["DQN+DR3"]}) == []
  files = report.build_report([str(tmp_path / "runs" / "*")], str(tmp_path / "out"), reps=50, curve_reps=20,
                              warn=lambda m: None)
  fig1 = str(tmp_path / "out" / "fig1_small.png")
  assert fig1 in files
  image = mpimg.imread(fig1)
  # Two rows of panels (dot products, average Q) by two games: wider than tall, a real plot.
  assert image.shape[1] > image.shape[0] > 300 and image.std() > 0.05


def test_an_explicit_label_over_runs_with_different_settings_is_warned_about(tmp_path):
  for seed, c0 in ((0, 0.01), (1, 0.03)):
    write_run(tmp_path / f"s{seed}", {"domain": "atari", "game": "pong", "agent": "cql_qr", "label": "mine",
                                       "setting": "1pct", "seed": seed, "label_parts": {
                                           "settings": {}, "penalties": [["DR3", {"c0": c0}]]}},
              atari_rows("Pong", "CQL", "1pct", seed))
  warnings = []
  report.build_report([str(tmp_path / "*")], str(tmp_path / "out"), reps=50, curve_reps=20, warn=warnings.append)
  assert any("mine" in w and "CQL+DR3 (c0=0.01); CQL+DR3 (c0=0.03)" in w for w in warnings), warnings
