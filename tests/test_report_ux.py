"""What a user of the report sees: bootstrap progress, a default number of replications whose CIs are stable,
the time of a paper-sized report, and figures sized and styled for a paper."""
import os
import resource
import time

import numpy as np
import pytest
from PIL import Image

from batch_rl_dr3 import reference_scores
from batch_rl_dr3.analysis import aggregate, plots, report
from batch_rl_dr3.analysis.runs import load_runs
from batch_rl_dr3.atari_games import DR3_PAPER_GAMES
from tests.test_report import write_run

LABELS = {"DQN": ("dqn", 0.0), "DQN+DR3": ("dqn", 0.1), "CQL": ("cql_qr", 0.0), "CQL+DR3": ("cql_qr", 0.1)}


def write_paper_sized_runs(root, games=DR3_PAPER_GAMES, labels=LABELS, seeds=3, iterations=100):
  """games x labels x seeds runs of `iterations` rows; CQL and DQN get identical dot products (curves that
  must both stay visible in the plots)."""
  rng = np.random.default_rng(0)
  for game in games:
    low, high = reference_scores.random_and_human_score(game)
    for label, (agent, c0) in labels.items():
      for seed in range(seeds):
        rows = [{"iteration": it, "gradient_steps": (it + 1) * 62_500,
                 "eval/return": float(low + (high - low) * rng.uniform(0, 1.2) * (it + 1) / iterations),
                 "train/dot_product": float(10 * (it + 1) * (0.1 if c0 else 1.0)),
                 "train/srank": float(300 - it)} for it in range(iterations)]
        write_run(os.path.join(root, f"{game}_{label}_{seed}"),
                  {"domain": "atari", "game": game, "agent": agent, "label": label, "setting": "1pct",
                   "seed": seed, "dr3_coefficient": c0}, rows)


def test_report_shows_bootstrap_progress_without_carriage_returns(tmp_path):
  write_paper_sized_runs(str(tmp_path / "runs"), games=DR3_PAPER_GAMES[:3], seeds=2, iterations=5)
  lines = []
  report.build_report([str(tmp_path / "runs" / "*")], str(tmp_path / "out"), reps=50, curve_reps=20,
                      warn=lines.append)
  progress = [line for line in lines if line.startswith("bootstrap CIs")]
  # 4 labels x (average, final) for Table 1, then 4 learning curves: 12 bootstraps, the last line says so.
  assert progress and progress[-1].startswith("bootstrap CIs (50 / 20 replications for tables / curves): "
                                              "12/12 CIs (100%)")
  assert "took" in progress[-1] and not any("\r" in line for line in lines)


def test_default_replications_keep_the_ci_stable():
  """How rliable's CIs move with the number of replications: at the default, the IQM CI's bounds change by a
  standard deviation below 0.1 normalized points between bootstrap seeds (the tables print one decimal); at 200
  replications they move clearly more."""
  rng = np.random.default_rng(0)
  base = rng.lognormal(mean=3.5, sigma=1.0, size=17)
  matrix = base[None, :] * rng.lognormal(0, 0.3, size=(3, 17))

  def bound_spread(reps):
    bounds = [(e.lower, e.upper) for e in (aggregate.interval_estimates({"a": matrix}, reps=reps, seed=s)["a"]
                                           for s in range(4))]
    return np.std(np.array(bounds), axis=0).max()

  assert aggregate.DEFAULT_REPS == 2000
  default_spread = bound_spread(aggregate.DEFAULT_REPS)
  assert default_spread < 0.1
  assert bound_spread(200) > 1.5 * default_spread


@pytest.mark.slow
def test_report_over_17_games_4_labels_3_seeds_takes_under_a_minute(tmp_path):
  write_paper_sized_runs(str(tmp_path / "runs"))
  cpu_before = resource.getrusage(resource.RUSAGE_SELF)
  wall = time.time()
  files = report.build_report([str(tmp_path / "runs" / "*")], str(tmp_path / "out"), warn=lambda _: None)
  wall = time.time() - wall
  cpu_after = resource.getrusage(resource.RUSAGE_SELF)
  cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
  assert len(files) >= 6
  # CPU time: on this shared machine other processes stretch the wall time; both are printed for the record.
  print(f"report of 204 runs: {cpu:.1f} s CPU, {wall:.1f} s wall")
  assert cpu < 60


def test_figures_are_paper_sized_and_keep_identical_curves_apart(tmp_path):
  write_paper_sized_runs(str(tmp_path / "runs"), games=["Pong"], seeds=2, iterations=40)
  runs = load_runs([str(tmp_path / "runs" / "*")], warn=lambda _: None)
  by_label = {}
  for run in runs:
    by_label.setdefault(run.info["label"], {}).setdefault("Pong", []).append(run)
  path = str(tmp_path / "dot.png")
  assert plots.plot_metric_per_env(by_label, "train/dot_product", "dot products", path)
  width, height = Image.open(path).size
  # One panel: about half a page wide (3.85 in) at 200 dpi, not the 320 x 250 px of before.
  assert (width, height) == (round(0.55 * plots.PAGE_WIDTH * plots.DPI), height) and height >= 500
  assert plots.column_label("train/dot_product").startswith("feature dot product")
  assert plots.column_label("train/my_metric") == "my metric"
  # Four labels, four different (line style, marker) pairs, and markers at different points of the curve.
  styles = [plots._style(i, 40) for i in range(4)]  # pylint: disable=protected-access
  assert len({(s["linestyle"], s["marker"]) for s in styles}) == 4
  assert len({s["markevery"][0] for s in styles}) == 4
