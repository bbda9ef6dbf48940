"""The entry point `python -m batch_rl_dr3.train` end to end on a tiny DQN Replay dataset in the real format.

- a run killed with SIGKILL mid-iteration and resumed gives exactly the metrics and parameters of an
  uninterrupted run with the same seed;
- bad input gets one line naming the flag / binding / file, and a non-zero exit code;
- NaN rewards in the data stop the run with exit code 2 and keep the last good checkpoint.
"""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from batch_rl_dr3 import train
from batch_rl_dr3.data import dqn_replay
from batch_rl_dr3.errors import ConfigError, DataError, TrainingDivergedError
from tests.replay_fixtures import write_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small but complete: CQL-QR + DR3 through the whole pipeline, short evaluation episodes.
SMALL = ["load_dataset.setting = 'all'", "CQLQR.num_quantiles = 8", "run_experiment.log_every_steps = 5",
         "AtariExperiment.evaluation_steps = 40", "AtariExperiment.max_steps_per_episode = 40",
         "AtariExperiment.num_eval_envs = 1",
         "AtariExperiment.diagnostics_batch_size = 64"]
GIN_FILES = ["atari/cql_qr.gin", "atari/dr3.gin"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("dqn_replay")
  write_run(str(root), game="Pong", run=1, num_checkpoints=2, capacity=300, seed=1)
  return str(root)


def _command(base_dir, data_root, iterations, steps, extra=()):
  cmd = [sys.executable, "-m", "batch_rl_dr3.train", f"--base_dir={base_dir}", f"--data_dir={data_root}",
         "--game=Pong", "--run=1", "--seed=7"]
  cmd += [f"--gin_files={f}" for f in GIN_FILES]
  bindings = SMALL + [f"run_experiment.num_iterations = {iterations}",
                      f"run_experiment.gradient_steps_per_iteration = {steps}"] + list(extra)
  return cmd + [f"--gin_bindings={b}" for b in bindings]


def _env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)


def _metric_rows(base_dir):
  with open(os.path.join(base_dir, "metrics.csv")) as f:
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in csv.DictReader(f)]


def _checkpoint_tensors(base_dir):
  path = tf.train.latest_checkpoint(os.path.join(base_dir, "checkpoints"))
  reader = tf.train.load_checkpoint(path)
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
          if "OPTIMIZER_SLOT" in name or "online" in name or "rng" in name or "gradient_steps" in name}


def _run_to_end(base_dir, data_root, iterations, steps):
  subprocess.run(_command(base_dir, data_root, iterations, steps), env=_env(), check=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _assert_same_network_state(base_a, base_b):
  tensors_a, tensors_b = _checkpoint_tensors(base_a), _checkpoint_tensors(base_b)
  assert len(tensors_a) > 10 and tensors_a.keys() == tensors_b.keys()
  for name in tensors_a:
    np.testing.assert_array_equal(tensors_a[name], tensors_b[name], err_msg=name)


def test_killed_run_resumes_exactly_like_an_uninterrupted_run(tmp_path, data_root):
  iterations, steps = 3, 12
  straight = tmp_path / "straight"
  _run_to_end(straight, data_root, iterations, steps)

  killed = tmp_path / "killed"
  proc = subprocess.Popen(_command(killed, data_root, iterations, steps), env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  first_checkpoint = killed / "checkpoints" / "ckpt-1.index"
  deadline = time.time() + 300
  while not first_checkpoint.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  time.sleep(0.3)  # now inside iteration 1
  assert proc.poll() is None, "the run ended before it could be killed"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not (killed / "DONE").exists()
  done_before_resume = len(_metric_rows(killed))
  assert done_before_resume < iterations

  _run_to_end(killed, data_root, iterations, steps)
  assert (killed / "DONE").exists()
  rows_a, rows_b = _metric_rows(straight), _metric_rows(killed)
  assert [r["iteration"] for r in rows_b] == ["0", "1", "2"]
  assert {"train/quantile_loss", "train/dr3", "train/cql_gap", "train/dot_product", "train/srank",
          "eval/return", "eval/num_episodes", "eval/normalized_score"} <= set(rows_a[0])
  assert rows_a == rows_b
  _assert_same_network_state(straight, killed)


@pytest.mark.slow
def test_sigterm_saves_the_step_exits_0_and_the_resume_equals_an_uninterrupted_run(tmp_path, data_root):
  """A preempted machine (SIGTERM) loses no work: the checkpoint of the current step is saved, the command exits
  0 saying it will resume, and the rerun continues from that step as the uninterrupted run."""
  iterations, steps = 3, 40
  straight = tmp_path / "straight"
  _run_to_end(straight, data_root, iterations, steps)

  stopped = tmp_path / "stopped"
  proc = subprocess.Popen(_command(stopped, data_root, iterations, steps), env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  seen = []
  for line in proc.stderr:  # the train progress line of iteration 1 (one every log_every_steps = 5 steps)
    seen.append(line)
    if "train: " in line and "iteration 1 |" in line:
      os.kill(proc.pid, signal.SIGTERM)
      break
  assert proc.poll() is None or proc.returncode == 0, "".join(seen[-20:])
  rest, _ = proc.communicate(timeout=300)[1], None
  stderr = "".join(seen) + rest
  assert proc.returncode == 0, stderr[-2000:]
  last = stderr.strip().splitlines()[-1]
  assert last.startswith("preempted: stopped by SIGTERM at step ") and "rerun the same command to resume" in last
  assert not (stopped / "DONE").exists()
  state = json.load(open(stopped / "checkpoints" / "preempted" / "state.json"))
  assert state["iteration"] == 1 and 0 < state["step"] < steps and f"at step {state['step']} of iteration 1" in last
  assert len(_metric_rows(stopped)) == 1

  _run_to_end(stopped, data_root, iterations, steps)
  assert (stopped / "DONE").exists() and not (stopped / "checkpoints" / "preempted").exists()
  assert _metric_rows(straight) == _metric_rows(stopped)  # iteration 1's means include the steps before SIGTERM
  _assert_same_network_state(straight, stopped)


def test_cli_bad_binding_is_one_line_and_exit_1(tmp_path, data_root):
  keep = tmp_path / "run" / "notes.txt"
  keep.parent.mkdir()
  keep.write_text("mine")
  result = subprocess.run(_command(tmp_path / "run", data_root, 1, 2, ["OfflineAgent.learning_rat = 0.1"]),
                          env=_env(), capture_output=True, text=True)
  assert result.returncode == 1
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "learning_rat" in errors[0], result.stderr[-2000:]
  assert keep.read_text() == "mine"


def _train(base_dir, data_dir, extra=(), files=GIN_FILES, game="Pong"):
  bindings = train.flag_bindings(data_dir=data_dir, game=game, run=1, seed=0)
  bindings += SMALL + ["run_experiment.num_iterations = 2", "run_experiment.gradient_steps_per_iteration = 3"]
  return train.train(str(base_dir), files, bindings + list(extra))


@pytest.mark.parametrize("extra, files, game, error, pattern", [
    (["OfflineAgent.dr3_coefficent = 0.5"], GIN_FILES, "Pong", ConfigError, r"dr3_coefficent"),
    (["NoSuchThing.x = 1"], GIN_FILES, "Pong", ConfigError, r"NoSuchThing"),
    ([], GIN_FILES + ["atari/no_such_file.gin"], "Pong", ConfigError, r"no_such_file\.gin"),
    ([], GIN_FILES, "Pongg", ConfigError, r"Pongg.*Pong"),
    (["AtariExperiment.agent_name = 'cql'"], GIN_FILES, "Pong", ConfigError, r"'cql'.*cql_qr"),
    (["create_agent.agent_name = 'rem'"], GIN_FILES, "Pong", ConfigError, r"agent_name"),
])
def test_bad_config_messages(tmp_path, data_root, extra, files, game, error, pattern):
  with pytest.raises(error, match=pattern):
    _train(tmp_path / "run", data_root, extra, files, game)


def test_missing_game_names_the_binding(tmp_path, data_root):
  bindings = train.flag_bindings(data_dir=data_root) + SMALL
  with pytest.raises(ConfigError, match=r"AtariExperiment.*\['game'\].*--game"):
    train.train(str(tmp_path / "run"), GIN_FILES, bindings)


@pytest.mark.parametrize("binding, knob", [("load_dataset.run = 2", r"AtariExperiment.data_run"),
                                           ("evaluate.num_steps = 10", r"AtariExperiment.evaluation_steps")])
def test_bindings_an_atari_run_would_ignore_are_refused(tmp_path, data_root, binding, knob):
  with pytest.raises(ConfigError, match=knob):
    _train(tmp_path / "run", data_root, [binding])


def test_dataset_of_another_game_is_refused(tmp_path):
  # Breakout has 4 actions; a dataset with action 5 cannot be Breakout's.
  directory = write_run(str(tmp_path / "data"), game="Breakout", run=1, num_checkpoints=1, capacity=300, seed=3)
  arrays = dqn_replay.load_checkpoint(directory, 0)
  arrays["action"][10] = 5
  dqn_replay.save_checkpoint(directory, 0, arrays)
  with pytest.raises(DataError, match=r"actions range over \[0, 5\].*Breakout has 4 actions"):
    _train(tmp_path / "run", str(tmp_path / "data"), game="Breakout")


def test_run_info_names_the_experiment(tmp_path, data_root):
  import json
  _train(tmp_path / "run", data_root, ["CQLQR.backup = 'sarsa'", "run_experiment.num_iterations = 1",
                                       "AtariExperiment.evaluation_steps = 0"])
  info = json.load(open(tmp_path / "run" / "run_info.json"))
  # The label rule: every agent setting off its default (the backup; SMALL's 8 quantiles) and DR3's c0.
  assert info["label"] == "CQL+DR3 (backup=sarsa, num_quantiles=8, c0=0.03)"
  assert info["label_parts"] == {"settings": {"backup": "sarsa", "num_quantiles": 8},
                                 "penalties": [["DR3", {"c0": pytest.approx(0.03)}]]}
  assert info["backup"] == "sarsa" and info["game"] == "Pong"
  assert info["dataset"] == {"checkpoints": [0, 1], "transitions_per_checkpoint": [None], "subset": "prefix",
                             "subset_seed": None}


def test_missing_and_empty_dataset_folders(tmp_path):
  with pytest.raises(DataError, match=r"no_data.*Pong/1/replay_logs"):
    _train(tmp_path / "run", str(tmp_path / "no_data"))
  empty = tmp_path / "empty" / "Pong" / "1" / "replay_logs"
  empty.mkdir(parents=True)
  with pytest.raises(DataError, match=r"replay_logs"):
    _train(tmp_path / "run2", str(tmp_path / "empty"))


def test_nan_rewards_in_the_data_are_refused_at_load(tmp_path):
  directory = write_run(str(tmp_path / "data"), game="Pong", run=1, num_checkpoints=1, capacity=300, seed=2)
  arrays = dqn_replay.load_checkpoint(directory, 0)
  arrays["reward"][5] = np.nan
  dqn_replay.save_checkpoint(directory, 0, arrays)
  with pytest.raises(DataError, match=r"reward_ckpt\.0\.gz.*NaN"):
    _train(tmp_path / "run", str(tmp_path / "data"))


def test_diverging_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, data_root):
  # Adam steps of ~1e30 overflow the Q-values within a few steps.
  with pytest.raises(TrainingDivergedError, match=r"train/\w+ became (nan|inf) .*iteration 0.*No checkpoint"):
    _train(tmp_path / "run", data_root, ["OfflineAgent.learning_rate = 1e30"])
  assert not os.path.exists(tmp_path / "run" / "DONE")
  assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints")) is None


def _network_tensors(base_dir):
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(base_dir, "checkpoints")))
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
          if name.startswith(("agent/online_network/", "agent/target_network/")) and "OPTIMIZER_SLOT" not in name}


def test_init_from_continues_a_dr3_runs_weights_without_dr3_in_a_new_run(tmp_path, data_root):
  import json
  no_eval = ["AtariExperiment.evaluation_steps = 0", "run_experiment.num_iterations = 1"]
  source = tmp_path / "dqn_dr3"
  _train(source, data_root, no_eval, files=["atari/dqn.gin", "atari/dr3.gin"])
  source_weights = _network_tensors(source)
  assert len(source_weights) >= 10  # kernels and biases of both networks
  # With a zero learning rate the new run's weights stay its initial ones: exactly the source checkpoint's.
  frozen = tmp_path / "frozen"
  bindings = train.flag_bindings(data_dir=data_root, game="Pong", run=1, seed=0, init_from=str(source))
  bindings += SMALL + no_eval + ["run_experiment.gradient_steps_per_iteration = 3"]
  train.train(str(frozen), ["atari/dqn.gin"], bindings + ["OfflineAgent.learning_rate = 0.0"])
  # (The target network, restored too, is overwritten by the sync after the first step: it then equals the
  # restored online network, as Dopamine's schedule syncs after step 1.)
  frozen_weights = _network_tensors(frozen)
  assert frozen_weights.keys() == source_weights.keys()
  for name, value in source_weights.items():
    if name.startswith("agent/online_network/"):
      np.testing.assert_array_equal(frozen_weights[name], value, err_msg=name)
      target_name = name.replace("agent/online_network/", "agent/target_network/")
      np.testing.assert_array_equal(frozen_weights[target_name], value, err_msg=target_name)
  # DQN without DR3 from the DR3 run's weights trains, and its run_info names the source.
  continued = tmp_path / "continued"
  row = train.train(str(continued), ["atari/dqn.gin"], bindings)
  assert np.isfinite(row["train/td_loss"])
  continued_weights = _network_tensors(continued)
  assert any(not np.array_equal(continued_weights[n], v) for n, v in source_weights.items())
  info = json.load(open(continued / "run_info.json"))
  source_info = json.load(open(source / "run_info.json"))
  # Its own label (never pooled with DQN trained from scratch) names the source; DR3 is off in it.
  assert source_info["label"] == "DQN+DR3 (c0=0.03)"
  assert info["label"] == "DQN (init_from=DQN+DR3[c0=0.03])" and info["dr3_coefficient"] == 0.0
  assert info["init_from"]["run_dir"] == str(source) and info["init_from"]["label"] == source_info["label"]
  assert info["init_from"]["checkpoint"].endswith("ckpt-1") and info["init_from"]["iteration"] == 1
  # Resuming (extending) keeps the record; a resume that names another source is refused.
  train.train(str(continued), ["atari/dqn.gin"], bindings + ["run_experiment.num_iterations = 2"])
  assert json.load(open(continued / "run_info.json"))["init_from"] == info["init_from"]
  other = train.flag_bindings(data_dir=data_root, game="Pong", run=1, seed=0, init_from=str(frozen))
  with pytest.raises(ConfigError, match=r"other settings .*init_from"):
    train.train(str(continued), ["atari/dqn.gin"], other + SMALL + no_eval + [
        "run_experiment.gradient_steps_per_iteration = 3", "run_experiment.num_iterations = 3"])
  # A source whose networks do not fit (CQL's quantile heads into DQN) is one clear line.
  with pytest.raises(ConfigError, match=r"init_from=.*does not fit this experiment's networks"):
    train.train(str(tmp_path / "bad"), GIN_FILES, bindings)
  with pytest.raises(ConfigError, match=r"init_from=.*no checkpoint"):
    train.train(str(tmp_path / "bad2"), ["atari/dqn.gin"], train.flag_bindings(
        data_dir=data_root, game="Pong", run=1, seed=0, init_from=str(tmp_path)) + SMALL + no_eval)
