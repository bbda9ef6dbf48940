"""--estimate: gradient and evaluation steps read from each run's real gin config, and hours at the rates of a
benchmarks results file, checked against a hand computation on a tiny sweep."""
import json

import pytest

from batch_rl_dr3.errors import ConfigError
from launch import estimate as estimate_lib
from launch import sweep as sweep_lib

# 2 agents (DQN, DQN + DR3) x 2 seeds; 3 iterations of 100 gradient steps, 50 evaluation agent steps each.
TINY = """
name = "tiny"
axes = ["agent", "seed"]
gin_bindings = ["run_experiment.num_iterations = 3", "run_experiment.gradient_steps_per_iteration = 100",
                "AtariExperiment.evaluation_steps = 50"]
[flags]
game = "Pong"
data_dir = "${data_dir}"
[axis.agent.points.dqn]
gin_files = ["atari/dqn.gin"]
[axis.agent.points."dqn+dr3"]
gin_files = ["atari/dqn.gin", "atari/dr3.gin"]
[axis.seed]
flag = "seed"
values = [0, 1]
"""

FIGURES = [
    {"name": "dqn_step_vs_dopamine", "value": 40.0, "unit": "steps/s", "baseline": 50.0, "ratio": 0.8},
    {"name": "dqn_dr3_cost", "value": 50.0, "unit": "ms/step", "baseline": 25.0, "ratio": 2.0},
    {"name": "eval_steps_per_second_vs_single_env", "value": 200.0, "unit": "agent steps/s", "baseline": 40.0,
     "ratio": 5.0},
]


@pytest.fixture
def tiny(tmp_path):
  path = tmp_path / "tiny.toml"
  path.write_text(TINY)
  bench = tmp_path / "results.json"
  bench.write_text(json.dumps(FIGURES))
  return sweep_lib.load_sweep(str(path)), str(bench)


def test_steps_and_hours_match_a_hand_computation(tiny):
  sweep, bench = tiny
  est = estimate_lib.estimate(sweep.runs, data_dir="/d", benchmarks=bench, steps_per_second=1000.0,
                              eval_steps_per_second=100.0)
  assert est.gradient_steps == 4 * 3 * 100 and est.eval_steps == 4 * 3 * 50 and est.eval_episodes == 0
  groups = {g.agent: g for g in est.groups}
  assert sorted(groups) == ["dqn", "dqn+dr3"] and groups["dqn"].runs == groups["dqn+dr3"].runs == 2
  # DQN: 600 steps at 40 steps/s = 15 s; DQN + DR3: 600 steps at 50 ms/step = 30 s; no run-overhead figure.
  assert est.measured_train_hours() == pytest.approx((600 / 40 + 600 * 0.050) / 3600)
  assert est.measured_eval_hours() == pytest.approx(600 / 200 / 3600)   # 600 agent steps at 200/s
  assert est.target_train_hours() == pytest.approx(1200 / 1000 / 3600)
  assert est.target_eval_hours() == pytest.approx(600 / 100 / 3600)
  assert any("run_steps_vs_step" in note for note in est.notes)


def test_the_whole_run_overhead_figure_scales_train_hours(tiny, tmp_path):
  sweep, _ = tiny
  bench = tmp_path / "with_overhead.json"
  bench.write_text(json.dumps(FIGURES + [{"name": "run_steps_vs_step", "value": 36.0, "unit": "steps/s",
                                          "baseline": 40.0, "ratio": 0.9}]))
  est = estimate_lib.estimate(sweep.runs, data_dir="/d", benchmarks=str(bench))
  assert est.measured_train_hours() == pytest.approx((600 / (40 * 0.9) + 600 / (20 * 0.9)) / 3600)
  assert not any("run_steps_vs_step" in note for note in est.notes)


def test_missing_figures_leave_hours_unknown_with_a_note(tiny, tmp_path):
  sweep, _ = tiny
  bench = tmp_path / "partial.json"
  bench.write_text(json.dumps(FIGURES[:1]))
  est = estimate_lib.estimate(sweep.runs, data_dir="/d", benchmarks=str(bench))
  assert est.measured_train_hours() is None and est.measured_eval_hours() is None
  assert any("no train rate for dqn+dr3" in n and "dqn_dr3_cost" in n for n in est.notes)
  assert any("eval_steps_per_second_vs_single_env" in n and "--eval_steps_per_second" in n for n in est.notes)
  text = estimate_lib.format_estimate("tiny", 4, est, str(bench))
  assert "train unknown + evaluation unknown = unknown" in text
  with pytest.raises(ConfigError, match=r"--steps_per_second=0.0; expected a positive rate"):
    estimate_lib.estimate(sweep.runs, data_dir="/d", benchmarks=str(bench), steps_per_second=0.0)


def test_table1_counts_come_from_the_setting_files():
  sweep = sweep_lib.load_sweep("table1")
  runs = sweep.select({"game": ["Pong"], "seed": ["seed0"], "agent": ["cql_qr"]})
  works = {r.labels["setting"]: estimate_lib.workload(r) for r in runs}
  # 1 %: 104 iterations x 62,500 = 6.5M (atari/1pct.gin, Table 1's caption); 5 % and initial 10 %: 200 x 62,500;
  # 125,000 eval steps each.
  assert works["1pct"].gradient_steps == 6_500_000 and works["1pct"].eval_steps == 104 * 125_000
  assert works["5pct"].gradient_steps == works["first10pct"].gradient_steps == 12_500_000
  assert {w.agent for w in works.values()} == {"cql_qr"} and estimate_lib.train_rate_figure("cql_qr+dr3") == "dr3_cost"


def test_local_cli_prints_the_estimate_without_a_root(tiny, capsys):
  from launch import local
  sweep, bench = tiny
  code = local.main(["--sweep", sweep.path, "--estimate", "--data_dir", "/d", "--benchmarks", bench,
                     "--steps_per_second", "1000"])
  out = capsys.readouterr().out
  assert code == 0
  assert "Estimate for 4 runs of sweep tiny" in out
  assert "Total: 1,200 gradient steps, 600 evaluation agent steps" in out
  assert "At --steps_per_second=1000: train 0.000333 h + evaluation unknown = unknown" in out


def test_xmanager_launcher_prints_the_same_estimate(tiny, capsys):
  from launch import xm_gcp
  sweep, bench = tiny
  xm_gcp.FLAGS(["xm_gcp.py", f"--sweep={sweep.path}", "--estimate", "--data_dir=/d", f"--benchmarks={bench}",
                "--eval_steps_per_second=100"])
  try:
    code = xm_gcp.main([])
  finally:
    xm_gcp.FLAGS.unparse_flags()
  out = capsys.readouterr().out
  assert code == 0
  # measured: 15 s + 30 s of training = 0.0125 h, 3 s of evaluation; target evaluation 6 s.
  assert "train 0.0125 h + evaluation 0.000833 h = 0.0133 h" in out
  assert "At --eval_steps_per_second=100: train unknown + evaluation 0.00167 h = unknown" in out


def test_multi_seed_runs_count_seed_steps_priced_with_the_multi_seed_figure(tiny, tmp_path):
  sweep, _ = tiny
  bench = tmp_path / "multi.json"
  bench.write_text(json.dumps(FIGURES + [{"name": "multi_seed_step_cost", "value": 20.0, "unit": "ms/seed-step",
                                          "baseline": 25.0, "ratio": 0.8}]))
  runs = [r for r in sweep.runs if r.labels["agent"] == "dqn"]
  import dataclasses
  runs = [dataclasses.replace(r, gin_files=r.gin_files + ("launch/gin/multi_seed.gin",),
                              gin_bindings=r.gin_bindings + ("MultiSeedAtariExperiment.num_seeds = 3",))
          for r in runs]
  est = estimate_lib.estimate(runs, data_dir="/d", benchmarks=str(bench))
  [group] = est.groups
  assert group.agent == "dqn x3" and group.gradient_steps == 2 * 3 * 300 and group.eval_steps == 2 * 3 * 150
  # 1,800 seed-steps at 40 steps/s / 0.8 = 50 seed-steps/s.
  assert est.measured_train_hours() == pytest.approx(1800 / 50 / 3600)


@pytest.mark.parametrize("launcher_name", ["vertex", "gke"])
def test_tpu_launchers_estimate_without_a_root(tiny, launcher_name, capsys):
  import importlib
  from launch import cloud
  sweep, bench = tiny
  launcher = importlib.import_module(f"launch.{launcher_name}")
  code = cloud.launcher_main(launcher, [f"--sweep={sweep.path}", "--estimate", "--data_dir=/d",
                                        f"--benchmarks={bench}", "--steps_per_second=600"])
  out = capsys.readouterr().out
  assert code == 0 and "Total: 1,200 gradient steps, 600 evaluation agent steps" in out
  assert "At --steps_per_second=600: train 0.000556 h" in out   # 1,200 / 600 s


def test_bindings_through_gin_macros_are_evaluated_as_gin_would(tiny, tmp_path):
  sweep, bench = tiny
  text = TINY.replace('"run_experiment.num_iterations = 3"', '"ITERS = 5", "run_experiment.num_iterations = %ITERS"')
  path = tmp_path / "macro.toml"
  path.write_text(text)
  est = estimate_lib.estimate(sweep_lib.load_sweep(str(path)).runs, data_dir="/d", benchmarks=bench)
  assert est.gradient_steps == 4 * 5 * 100 and est.eval_steps == 4 * 5 * 50
