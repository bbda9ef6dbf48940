"""Several seeds in one compiled step give exactly the parameters and metrics of separate runs with those seeds:
on the agents directly (DQN + DR3, REM with its random mixtures, target syncs inside the steps) and, slow,
through the real runner (checkpoints and metrics.csv of one multi-seed run against two ordinary runs)."""
import csv
import os

import numpy as np
import pytest
import tensorflow as tf

from batch_rl_dr3 import multi_seed
from batch_rl_dr3.agents import DQN, REM
from batch_rl_dr3.data import fixed_replay
from batch_rl_dr3.errors import ConfigError
from batch_rl_dr3.regularizers import DR3
from tests import replay_fixtures

NUM_ACTIONS = 6


@pytest.fixture
def narrow_networks():
  """A narrow Nature torso (same layers, fewer channels): the equality checked does not depend on width."""
  import gin
  gin.bind_parameter("NatureTorso.filters", (4, 8, 8))
  gin.bind_parameter("NatureTorso.feature_dim", 32)
  yield
  gin.clear_config()


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
  directory = replay_fixtures.write_run(str(tmp_path_factory.mktemp("data")), game="Pong", run=1,
                                        num_checkpoints=1, capacity=200)
  return fixed_replay.FixedReplay.from_checkpoints(directory, [0])


def _agent(cls, kwargs, replay, seed):
  tf.keras.utils.set_random_seed(seed)  # the network initializers' draws, as run_experiment seeds them
  return cls(NUM_ACTIONS, fixed_replay.InGraphSampler(replay, batch_size=8, seed=100 + seed), seed=seed, **kwargs())


def _parameters(agent):
  return [v.numpy() for v in agent.online_network.variables + agent.target_network.variables]


@pytest.mark.parametrize("cls, kwargs", [
    (DQN, lambda: {"penalties": [DR3(0.3, reduction="mean", use_abs=True)], "target_update_period": 2}),
    (REM, lambda: {"num_heads": 4, "target_update_period": 2})])
def test_one_compiled_step_of_several_seeds_equals_separate_agents(replay, narrow_networks, cls, kwargs):
  seeds = (0, 1)
  separate = [_agent(cls, kwargs, replay, s) for s in seeds]
  together = [_agent(cls, kwargs, replay, s) for s in seeds]
  step = multi_seed.MultiSeedStep(together)
  for _ in range(3):
    expected = [agent.train_step() for agent in separate]
    got = step()
    for e, g in zip(expected, got):
      assert sorted(e) == sorted(g)
      np.testing.assert_allclose(float(g["total_loss"]), float(e["total_loss"]), rtol=1e-6)
  assert step.tracing_count == 1
  for a, b in zip(separate, together):
    assert int(b.gradient_steps.numpy()) == 3
    for x, y in zip(_parameters(a), _parameters(b)):
      np.testing.assert_allclose(y, x, rtol=1e-6, atol=1e-7)
  # The members are independent: different seeds, different networks after the same number of steps.
  assert max(float(np.max(np.abs(x - y))) for x, y in zip(_parameters(together[0]), _parameters(together[1]))) > 1e-3
  with pytest.raises(ConfigError, match="at least one agent"):
    multi_seed.MultiSeedStep([])


def _rows(base_dir):
  with open(os.path.join(base_dir, "metrics.csv")) as f:
    return list(csv.DictReader(f))


def _tensors(base_dir):
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(base_dir, "checkpoints")))
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


@pytest.mark.slow
def test_a_multi_seed_run_equals_separate_runs_through_the_runner(tmp_path):
  from batch_rl_dr3 import train
  data = tmp_path / "data"
  replay_fixtures.write_run(str(data), game="Pong", run=1, num_checkpoints=1, capacity=200)
  bindings = ["load_dataset.setting = 'all'", f"load_dataset.data_dir = '{data}'", "AtariExperiment.game = 'Pong'",
              "AtariExperiment.batch_size = 8", "AtariExperiment.evaluation_steps = 0",
              "AtariExperiment.diagnostics_batch_size = 16", "run_experiment.num_iterations = 2",
              "run_experiment.gradient_steps_per_iteration = 3", "run_experiment.tensorboard = False",
              "OfflineAgent.target_update_period = 2"]
  files = ["atari/dqn.gin", "atari/dr3.gin"]
  for seed in (7, 8):
    train.train(str(tmp_path / f"run{seed}"), files, bindings + [f"run_experiment.seed = {seed}"])
  train.train(str(tmp_path / "multi"), files + ["launch/gin/multi_seed.gin"],
              bindings + ["run_experiment.seed = 7", "MultiSeedAtariExperiment.num_seeds = 2"])
  multi, run7, run8 = _tensors(tmp_path / "multi"), _tensors(tmp_path / "run7"), _tensors(tmp_path / "run8")
  for name, value in run7.items():
    if name.startswith("agent/") and "network" in name:
      np.testing.assert_allclose(multi[name], value, rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(multi[name.replace("agent/", "agent_seed8/")], run8[name], rtol=1e-5, atol=1e-6)
  rows, rows7, rows8 = _rows(tmp_path / "multi"), _rows(tmp_path / "run7"), _rows(tmp_path / "run8")
  for row, row7, row8 in zip(rows, rows7, rows8):
    for key in ("train/td_loss", "train/dr3", "train/srank"):
      assert float(row[key]) == pytest.approx(float(row7[key]), rel=1e-4)
      assert float(row[key.replace("train/", "train/seed8/")]) == pytest.approx(float(row8[key]), rel=1e-4)
  import json
  info = json.load(open(tmp_path / "multi" / "run_info.json"))
  assert info["seeds"] == [7, 8] and info["num_seeds"] == 2
  # Split: seed 8's folder reads like run 8's for the report.
  from batch_rl_dr3.analysis import runs as runs_lib
  [member_dir] = multi_seed.split_members(str(tmp_path / "multi"))
  member = runs_lib.read_run(member_dir)
  assert member.seed == 8 and member.label == runs_lib.read_run(str(tmp_path / "run8")).label
  for key in ("train/td_loss", "train/srank"):
    np.testing.assert_allclose(member.metrics[key], [float(r[key]) for r in rows8], rtol=1e-4)
  assert runs_lib.find_run_dirs([str(tmp_path / "multi" / "**")]) == [str(tmp_path / "multi"), member_dir]


def test_split_writes_each_members_columns_under_the_usual_names(tmp_path):
  import json
  from batch_rl_dr3 import runner
  base = tmp_path / "multi"
  base.mkdir()
  info = {"domain": "atari", "game": "Pong", "label": "DQN", "setting": "1pct", "seed": 3, "seeds": [3, 4, 5],
          "num_seeds": 3}
  (base / runner.RUN_INFO_FILE).write_text(json.dumps(info))
  rows = [{"iteration": i, "gradient_steps": 10 * (i + 1), "train/td_loss": 1.0 + i, "train/seed4/td_loss": 2.0 + i,
           "train/seed5/td_loss": 3.0 + i, "eval/return": 10.0 * i, "eval/seed4/return": 20.0 * i,
           "eval/seed5/return": 30.0 * i} for i in range(2)]
  (base / runner.METRICS_JSONL).write_text("".join(json.dumps(r) + "\n" for r in rows))
  (base / runner.DONE_FILE).write_text("{}")
  for _ in range(2):  # a second split rewrites, never appends
    written = multi_seed.split_members(str(base))
  assert written == [str(base / "seed4"), str(base / "seed5")]
  with open(base / "seed5" / "metrics.csv") as f:
    got = list(csv.DictReader(f))
  assert [(r["iteration"], r["gradient_steps"], r["train/td_loss"], r["eval/return"]) for r in got] == [
      ("0", "10", "3.0", "0.0"), ("1", "20", "4.0", "30.0")]
  member_info = json.loads((base / "seed4" / runner.RUN_INFO_FILE).read_text())
  assert member_info["seed"] == 4 and "seeds" not in member_info and member_info["multi_seed_run"] == str(base)
  assert (base / "seed4" / runner.DONE_FILE).exists()
  (base / runner.RUN_INFO_FILE).write_text(json.dumps(dict(info, seeds=None)))
  with pytest.raises(ConfigError, match="not a MultiSeedAtariExperiment run"):
    multi_seed.split_members(str(base))
