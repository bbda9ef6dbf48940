"""The tf.distribute step equals the single-device step on the same global batch (2 CPU replicas vs one device):
same loss, same parameters after two steps, same target network, for DQN + DR3, REM and CQL-QR; per-replica
sampling draws from different streams; REM's mixture is shared by the replicas.

Logical CPU devices must be set before TensorFlow initializes, so the checks run in a fresh subprocess (this
file run as a script) that prints its measurements as JSON; the test asserts on them.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from batch_rl_dr3 import REPO_ROOT

GLOBAL_BATCH = 8
MOMENTUM_TOLERANCE = 1e-2  # see _compare
NUM_ACTIONS = 6  # Pong, the game of the replay fixture


def _copy_networks(src, dst):
  for a, b in zip(src.online_network.variables + src.target_network.variables,
                  dst.online_network.variables + dst.target_network.variables):
    b.assign(a.numpy())


def _first_moments(agent):
  """Adam's first-moment slot of each trainable weight (legacy Keras optimizer, or the newer one)."""
  optimizer = agent.optimizer
  if hasattr(optimizer, "get_slot"):
    return [optimizer.get_slot(v, "m") for v in agent.trainable_weights]
  return [v for v in optimizer.variables if v.name.startswith("m/")]


def _compare(single, agent) -> dict:
  """How far the distributed agent is from the single-device one.

  Parameters: the largest excess of |a - b| over 1e-5 + 1e-4 |a| (<= 0 when equal to float tolerance), and the
  fraction of elements off by more than 1e-6. One Adam step moves a parameter by up to lr = 5e-5 whatever the
  gradient's size, so an element whose gradient is a near-zero sum of large terms (CQL's logsumexp gap) can
  land a few 1e-6 apart from float summation order alone; a wrong update moves nearly every element by ~lr.
  Adam is also nearly invariant to the gradient's scale, so the first-moment slots (0.1 x the gradient after
  one step) are compared too: they catch a wrongly scaled or unsummed gradient, which shows as a relative
  difference of 0.5 or more. Float noise alone stays below 1e-5 in most runs but reached 7e-4 in one of six
  identical runs under load (a slot whose entries are all tiny, after an Adam step amplified a 1e-6
  parameter difference), hence MOMENTUM_TOLERANCE = 1e-2: far below a scaling error, far above the noise.
  """
  networks = lambda x: x.online_network.variables + x.target_network.variables
  pairs = [(a.numpy(), b.numpy()) for a, b in zip(networks(single), networks(agent))]
  excess = max(float(np.max(np.abs(a - b) - (1e-5 + 1e-4 * np.abs(a)))) for a, b in pairs)
  beyond = sum(int(np.sum(np.abs(a - b) > 1e-6)) for a, b in pairs) / sum(a.size for a, _ in pairs)
  slots = [(a.numpy(), b.numpy()) for a, b in zip(_first_moments(single), _first_moments(agent))]
  slot_diff = max(float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) + 1e-20)) for a, b in slots)
  return {"param_excess": excess, "fraction_beyond_1e-6": beyond, "momentum_relative_diff": slot_diff,
          "num_momentum_slots": len(slots)}


def _child(data_root: str) -> dict:
  from batch_rl_dr3 import distributed
  distributed.configure_cpu_replicas(2)
  import tensorflow as tf
  from batch_rl_dr3.agents import CQLQR, DQN, REM
  from batch_rl_dr3.data import fixed_replay
  from batch_rl_dr3.errors import ConfigError
  from batch_rl_dr3.regularizers import DR3
  from tests import replay_fixtures

  directory = replay_fixtures.write_run(data_root, game="Pong", run=1, num_checkpoints=1, capacity=200)
  replay = fixed_replay.FixedReplay.from_checkpoints(directory, [0])
  strategy = distributed.create_strategy("mirrored")
  out = {"replicas": strategy.num_replicas_in_sync}
  rng = np.random.default_rng(0)
  batches = [{k: v.numpy() for k, v in replay.gather(tf.constant(rng.integers(0, replay.count, GLOBAL_BATCH),
                                                                  tf.int32)).items()} for _ in range(2)]
  cases = {
      "dqn_dr3": (DQN, dict(penalties=[DR3(0.3, reduction="mean", use_abs=True)], target_update_period=1)),
      "rem": (REM, dict(num_heads=5, penalties=[DR3(0.01)])),
      "cql_qr": (CQLQR, dict(num_quantiles=8, cql_alpha=4.0)),
  }
  for name, (cls, kwargs) in cases.items():
    single = cls(NUM_ACTIONS, fixed_replay.InGraphSampler(replay, GLOBAL_BATCH, seed=1), **kwargs)
    with strategy.scope():
      agent = cls(NUM_ACTIONS, fixed_replay.InGraphSampler(replay, GLOBAL_BATCH // 2, seed=1), **kwargs)
    _copy_networks(single, agent)
    step = distributed.DistributedTrainStep(strategy, agent, GLOBAL_BATCH)
    losses = []
    for batch in batches:
      head_weights = single.draw_head_weights()
      with tf.GradientTape() as tape:
        loss, _ = single.compute_loss(batch, head_weights)
      single.apply_gradients(tape.gradient(loss, single.trainable_weights))
      single.maybe_sync_target()
      metrics = step.step_on_batch(batch, None if head_weights is None else head_weights.numpy())
      losses.append([float(loss), float(metrics["total_loss"])])
    moved = float(max(np.max(np.abs(a.numpy() - b.numpy())) for a, b in zip(
        single.online_network.variables, agent.target_network.variables))) if name == "rem" else None
    out[name] = {"losses": losses, **_compare(single, agent),
                 "steps": [int(single.gradient_steps.numpy()), int(agent.gradient_steps.numpy())],
                 "optimizer_iterations": int(agent.optimizer.iterations.numpy()), "online_vs_target_rem": moved}

  # The host input path: a tf.data dataset of global batches, split across replicas by tf.distribute.
  single = DQN(NUM_ACTIONS, fixed_replay.InGraphSampler(replay, GLOBAL_BATCH, seed=1), penalties=[DR3(0.01)])
  with strategy.scope():
    agent = DQN(NUM_ACTIONS, fixed_replay.InGraphSampler(replay, GLOBAL_BATCH // 2, seed=1),
                penalties=[DR3(0.01)])
  _copy_networks(single, agent)
  step = distributed.DistributedTrainStep(strategy, agent, GLOBAL_BATCH)
  dataset = tf.data.Dataset.from_tensors(batches[0]).concatenate(tf.data.Dataset.from_tensors(batches[1]))
  iterator = step.distribute_dataset(dataset)
  losses = []
  for batch in batches:
    with tf.GradientTape() as tape:
      loss, _ = single.compute_loss(batch)
    single.apply_gradients(tape.gradient(loss, single.trainable_weights))
    single.maybe_sync_target()
    losses.append([float(loss), float(step.step_on_iterator(iterator)["total_loss"])])
  out["dqn_dataset"] = {"losses": losses, **_compare(single, agent)}

  # Per-replica in-graph sampling: each replica its own stream; REM's mixture the same on every replica.
  with strategy.scope():
    rem = REM(NUM_ACTIONS, fixed_replay.InGraphSampler(replay, GLOBAL_BATCH // 2, seed=3), num_heads=5)
  step = distributed.DistributedTrainStep(strategy, rem, GLOBAL_BATCH)
  drawn = step.sample_per_replica()
  out["sampled_indices"] = [d["indices"].numpy().tolist() for d in drawn]
  out["head_weights"] = [w.numpy().tolist() for w in step.shared_head_weights()]
  metrics = step()
  out["sampled_step"] = {"total_loss": float(metrics["total_loss"]), "steps": int(rem.gradient_steps.numpy())}
  try:  # rem's sampler draws 4 per replica: right for a global batch of 8, wrong for 16
    distributed.DistributedTrainStep(strategy, rem, 2 * GLOBAL_BATCH)
    out["batch_error"] = None
  except ConfigError as e:
    out["batch_error"] = str(e)
  try:
    distributed.DistributedTrainStep(strategy, single, GLOBAL_BATCH)
    out["scope_error"] = None
  except ConfigError as e:
    out["scope_error"] = str(e)
  try:  # last: connecting to a (missing) TPU cluster resets the eager context
    distributed.create_strategy("tpu")
    out["tpu_error"] = None
  except ConfigError as e:
    out["tpu_error"] = str(e)
  return out


def test_two_cpu_replicas_match_one_device_on_the_same_global_batch(tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run([sys.executable, os.path.abspath(__file__), str(tmp_path / "data")], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out["replicas"] == 2
  for name in ("dqn_dr3", "rem", "cql_qr"):
    case = out[name]
    for single_loss, distributed_loss in case["losses"]:
      np.testing.assert_allclose(distributed_loss, single_loss, rtol=1e-5)
    assert case["losses"][0][0] != case["losses"][1][0]  # two different batches, so a real second step
    assert case["param_excess"] <= 0 and case["fraction_beyond_1e-6"] < 1e-3, (name, case)
    assert case["num_momentum_slots"] > 0 and case["momentum_relative_diff"] < MOMENTUM_TOLERANCE, (name, case)
    assert case["steps"] == [2, 2] and case["optimizer_iterations"] == 2
  for single_loss, distributed_loss in out["dqn_dataset"]["losses"]:
    np.testing.assert_allclose(distributed_loss, single_loss, rtol=1e-5)
  assert out["dqn_dataset"]["param_excess"] <= 0 and out["dqn_dataset"]["fraction_beyond_1e-6"] < 1e-3
  assert out["dqn_dataset"]["momentum_relative_diff"] < MOMENTUM_TOLERANCE
  # REM syncs its target only after step 1 (period 2000): online has moved away from target since, identically.
  assert out["rem"]["online_vs_target_rem"] > 0

  first, second = out["sampled_indices"]
  assert len(first) == len(second) == 4 and first != second
  weights = np.array(out["head_weights"])
  np.testing.assert_array_equal(weights[0], weights[1])
  np.testing.assert_allclose(weights[0].sum(), 1.0, rtol=1e-6)
  assert np.isfinite(out["sampled_step"]["total_loss"]) and out["sampled_step"]["steps"] == 1
  assert "draws 4 transitions per replica" in out["batch_error"] and "must draw 8" in out["batch_error"]
  assert "not built under strategy.scope()" in out["scope_error"]
  # This machine has no TPU (and the CPU wheel of TF no TPU kernels): one line naming the setting.
  assert out["tpu_error"].startswith("create_strategy.kind='tpu': no TPU found (tpu='local': ")


if __name__ == "__main__":
  sys.path.insert(0, REPO_ROOT)
  print(json.dumps(_child(sys.argv[1])))


@pytest.mark.slow
@pytest.mark.parametrize("host_input", [False, True])
def test_entry_point_trains_data_parallel_with_the_mirrored_gin_file(tmp_path, host_input):
  from tests import replay_fixtures
  replay_fixtures.write_run(tmp_path / "data", game="Pong", run=1, num_checkpoints=1, capacity=200)
  base_dir = tmp_path / "run"
  command = [sys.executable, "-m", "batch_rl_dr3.train", f"--base_dir={base_dir}",
             "--gin_files=atari/dqn.gin", "--gin_files=atari/dr3.gin", "--gin_files=launch/gin/mirrored.gin",
             f"--data_dir={tmp_path / 'data'}", "--game=Pong", "--run=1", "--seed=0",
             "--gin_bindings=create_strategy.num_cpu_replicas = 2",
             f"--gin_bindings=DistributedAtariExperiment.host_input = {host_input}",
             "--gin_bindings=load_dataset.suffixes = [0]",
             "--gin_bindings=AtariExperiment.batch_size = 8",
             "--gin_bindings=AtariExperiment.evaluation_steps = 0",
             "--gin_bindings=AtariExperiment.diagnostics_batch_size = 16",
             "--gin_bindings=run_experiment.num_iterations = 2",
             "--gin_bindings=run_experiment.gradient_steps_per_iteration = 3"]
  env = dict(os.environ, PYTHONPATH=REPO_ROOT)
  result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  info = json.loads((base_dir / "run_info.json").read_text())
  assert info["strategy"] == "MirroredStrategy" and info["replicas"] == 2 and info["host_input"] == host_input
  assert (base_dir / "DONE").exists()
  rows = (base_dir / "metrics.csv").read_text().strip().splitlines()
  header = rows[0].split(",")
  last = dict(zip(header, rows[-1].split(",")))
  assert len(rows) == 3 and int(float(last["gradient_steps"])) == 6
  assert np.isfinite(float(last["train/total_loss"]))
