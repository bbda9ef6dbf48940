"""The shared training loop: run folder layout, resume identical to an uninterrupted run, NaN stop, bad base_dir.

The experiment here is a small real TF problem (least squares with SGD + momentum, batches drawn by a
checkpointed tf.random.Generator), so optimizer slots and RNG state must both survive a resume.
"""
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import gin
import numpy as np
import pytest
import tensorflow as tf

from batch_rl_dr3 import run_lock
from batch_rl_dr3 import runner
from batch_rl_dr3.errors import ConfigError, RunPreempted, TrainingDivergedError, first_line


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class LeastSquaresExperiment(tf.Module):
  """y = X w* + noise, fit by minibatch SGD with momentum."""

  def __init__(self, seed=0, crash_at=None, nan_from_iteration=None):
    super().__init__()
    rng = np.random.default_rng(123)
    self.x = rng.normal(size=(64, 3)).astype(np.float32)
    self.y = (self.x @ np.array([1.0, -2.0, 0.5], np.float32) + 0.1 * rng.normal(size=64)).astype(np.float32)
    self.data_y = tf.Variable(self.y, trainable=False)
    self.w = tf.Variable(tf.zeros([3]))
    self.optimizer = tf.keras.optimizers.SGD(learning_rate=0.05, momentum=0.9)
    self.optimizer.build([self.w])
    self.rng = tf.random.Generator.from_seed(seed)
    self.crash_at = crash_at  # iteration: raise after its train steps, before its checkpoint (a killed process)
    self.nan_from_iteration = nan_from_iteration
    self.iteration = 0

  def trackables(self):
    return {"w": self.w, "optimizer": self.optimizer, "rng": self.rng}

  def on_iteration_start(self, iteration):
    self.iteration = iteration
    if self.nan_from_iteration is not None and iteration >= self.nan_from_iteration:
      self.data_y.assign(np.full_like(self.y, np.nan))

  @tf.function
  def _step(self):
    idx = self.rng.uniform([8], 0, 64, dtype=tf.int32)
    xb, yb = tf.gather(self.x, idx), tf.gather(self.data_y, idx)
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.square(tf.linalg.matvec(xb, self.w) - yb))
    self.optimizer.apply_gradients([(tape.gradient(loss, self.w), self.w)])
    return {"loss": loss}

  def train_step(self):  # traced into the runner's compiled calls
    return self._step()

  def evaluate(self, iteration):
    return {"return": -float(np.mean((self.x @ self.w.numpy() - self.y) ** 2))}

  def diagnostics(self, iteration):
    if self.crash_at == iteration:
      raise KeyboardInterrupt("simulated kill")
    return {"w_norm": float(np.linalg.norm(self.w.numpy()))}

  def run_info(self):
    return {"domain": "test", "agent": "least_squares"}


def _run(base_dir, num_iterations, **experiment_kwargs):
  return runner.run_experiment(
      str(base_dir), create_experiment=lambda seed: LeastSquaresExperiment(seed=seed, **experiment_kwargs),
      num_iterations=num_iterations, gradient_steps_per_iteration=10, seed=3, log_every_steps=4)


def _rows(base_dir):
  with open(os.path.join(base_dir, "metrics.csv")) as f:
    return list(csv.DictReader(f))


def test_run_folder_layout(tmp_path):
  _run(tmp_path, 3)
  rows = _rows(tmp_path)
  assert [int(r["iteration"]) for r in rows] == [0, 1, 2]
  assert [int(r["gradient_steps"]) for r in rows] == [10, 20, 30]
  assert {"train/loss", "train/w_norm", "eval/return", "time/train_steps_per_second"} <= set(rows[0])
  # The loss falls as w approaches the least-squares solution.
  assert float(rows[-1]["train/loss"]) < float(rows[0]["train/loss"])
  info = json.load(open(tmp_path / "run_info.json"))
  assert info["agent"] == "least_squares" and info["seed"] == 3 and info["num_iterations"] == 3
  assert os.path.exists(tmp_path / "config.gin") and os.path.exists(tmp_path / "DONE")
  assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-3")
  assert any(name.startswith("events") for name in os.listdir(tmp_path / "tensorboard"))
  jsonl = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["train/loss"] for r in jsonl] == pytest.approx([float(r["train/loss"]) for r in rows])


def test_finished_run_is_not_rerun(tmp_path):
  last = _run(tmp_path, 2)
  mtime = os.path.getmtime(tmp_path / "metrics.csv")
  again = _run(tmp_path, 2)
  assert again["train/loss"] == pytest.approx(last["train/loss"])
  assert os.path.getmtime(tmp_path / "metrics.csv") == mtime


def test_resume_after_crash_equals_uninterrupted_run(tmp_path):
  _run(tmp_path / "straight", 4)
  with pytest.raises(KeyboardInterrupt):
    _run(tmp_path / "killed", 4, crash_at=2)  # dies in iteration 2, after checkpoint 2
  assert len(_rows(tmp_path / "killed")) == 2
  _run(tmp_path / "killed", 4)
  straight, resumed = _rows(tmp_path / "straight"), _rows(tmp_path / "killed")
  assert len(resumed) == 4
  for a, b in zip(straight, resumed):
    for key in ("train/loss", "eval/return", "train/w_norm"):
      assert float(a[key]) == float(b[key]), key


def test_rows_written_after_the_last_checkpoint_are_recomputed(tmp_path):
  _run(tmp_path / "straight", 3)
  _run(tmp_path / "run", 3)
  # Pretend the process died after writing row 2 but before checkpoint 3: drop the newest checkpoint.
  ckpt_dir = tmp_path / "run" / "checkpoints"
  for name in os.listdir(ckpt_dir):
    if name.startswith("ckpt-3"):
      os.remove(ckpt_dir / name)
  state = (ckpt_dir / "checkpoint").read_text().replace("ckpt-3", "ckpt-2")
  (ckpt_dir / "checkpoint").write_text(state)
  os.remove(tmp_path / "run" / "DONE")
  _run(tmp_path / "run", 3)
  assert [r["train/loss"] for r in _rows(tmp_path / "run")] == [
      r["train/loss"] for r in _rows(tmp_path / "straight")]


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path):
  with pytest.raises(TrainingDivergedError, match=r"train/loss became nan .*iteration 2.*Last good checkpoint: "
                                                  r"iteration 2"):
    _run(tmp_path, 4, nan_from_iteration=2)
  assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-2")
  assert len(_rows(tmp_path)) == 2
  assert not os.path.exists(tmp_path / "DONE")


def test_unwritable_base_dir_is_one_clear_error(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder")
  with pytest.raises(ConfigError, match=r"--base_dir=.*a_file/run is not writable"):
    _run(blocker / "run", 1)


@gin.configurable
def least_squares_learning_rate(value=0.05):
  return value


def _simulate_kill_after_first_checkpoint(base_dir):
  os.remove(base_dir / "DONE")
  ckpt_dir = base_dir / "checkpoints"
  for name in os.listdir(ckpt_dir):
    if name.startswith("ckpt-2"):
      os.remove(ckpt_dir / name)
  (ckpt_dir / "checkpoint").write_text((ckpt_dir / "checkpoint").read_text().replace("ckpt-2", "ckpt-1"))


def test_resume_with_other_settings_is_refused_and_changes_nothing(tmp_path):
  gin.clear_config()
  gin.parse_config("least_squares_learning_rate.value = 0.05")
  try:
    _run(tmp_path, 2)
    _simulate_kill_after_first_checkpoint(tmp_path)
    info_before = (tmp_path / "run_info.json").read_text()
    gin.clear_config()
    gin.parse_config("least_squares_learning_rate.value = 0.5")
    with pytest.raises(ConfigError, match=r"other settings .*was: least_squares_learning_rate.value = 0.05.*"
                                          r"now: least_squares_learning_rate.value = 0.5"):
      _run(tmp_path, 2)
    assert (tmp_path / "run_info.json").read_text() == info_before
    # Extending the run (more iterations) is a resume with the same settings.
    gin.clear_config()
    gin.parse_config("least_squares_learning_rate.value = 0.05")
    _run(tmp_path, 3)
    assert [int(r["iteration"]) for r in _rows(tmp_path)] == [0, 1, 2]
  finally:
    gin.clear_config()


def test_finished_run_can_be_extended_and_equals_a_longer_run(tmp_path):
  _run(tmp_path / "short", 2)
  _run(tmp_path / "short", 3)
  _run(tmp_path / "long", 3)
  assert [r["train/loss"] for r in _rows(tmp_path / "short")] == [r["train/loss"] for r in _rows(tmp_path / "long")]


class WiderExperiment(LeastSquaresExperiment):
  """Another experiment: its checkpoint does not fit LeastSquaresExperiment's (w has 5 entries, not 3)."""

  def __init__(self, seed=0):
    super().__init__(seed)
    self.w = tf.Variable(tf.zeros([5]))


def test_checkpoint_of_another_experiment_is_one_clear_error(tmp_path):
  _run(tmp_path, 1)
  os.remove(tmp_path / "DONE")
  with pytest.raises(ConfigError, match=r"checkpoint .*ckpt-1 does not fit this experiment"):
    runner.run_experiment(str(tmp_path), create_experiment=WiderExperiment, num_iterations=2,
                          gradient_steps_per_iteration=10, seed=3)


def test_log_every_steps_must_be_positive(tmp_path):
  with pytest.raises(ConfigError, match=r"log_every_steps=0"):
    runner.run_experiment(str(tmp_path), create_experiment=LeastSquaresExperiment, num_iterations=1,
                          gradient_steps_per_iteration=10, log_every_steps=0)


# ---------------------------------------------------------------------------------------------------------
# Nothing lost, nothing mixed: corrupted checkpoints, refused resumes, the folder lock.


def _folder_snapshot(base_dir):
  """Every file of the run folder (but the lock) -> its bytes."""
  out = {}
  for root, _, files in os.walk(base_dir):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, base_dir)] = f.read()
  return out


def _truncate_checkpoint(base_dir, number):
  ckpt_dir = os.path.join(base_dir, "checkpoints")
  (data,) = [n for n in os.listdir(ckpt_dir) if n.startswith(f"ckpt-{number}.data")]
  path = os.path.join(ckpt_dir, data)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  return path


def test_corrupted_latest_checkpoint_continues_from_the_newest_intact_one(tmp_path, caplog):
  _run(tmp_path / "straight", 4)
  _run(tmp_path / "run", 3)
  os.remove(tmp_path / "run" / "DONE")
  _truncate_checkpoint(tmp_path / "run", 3)
  caplog.set_level("WARNING")
  _run(tmp_path / "run", 4)
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert any("ckpt-3 cannot be read" in w and "IndexError" in w for w in warnings), warnings
  assert any("Continuing from" in w and "ckpt-2" in w for w in warnings), warnings
  # Iteration 2 was recomputed from checkpoint 2: the run equals the uninterrupted one.
  assert [r["train/loss"] for r in _rows(tmp_path / "run")] == [r["train/loss"] for r in _rows(tmp_path / "straight")]
  assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints")).endswith("ckpt-4")


def test_no_intact_checkpoint_is_one_error_and_changes_nothing(tmp_path):
  _run(tmp_path, 3)
  os.remove(tmp_path / "DONE")
  for number in (1, 2, 3):  # three are kept by default
    if any(n.startswith(f"ckpt-{number}.data") for n in os.listdir(tmp_path / "checkpoints")):
      _truncate_checkpoint(tmp_path, number)
  before = _folder_snapshot(tmp_path)
  with pytest.raises(runner.DataError, match=r"no intact checkpoint is left \(.*ckpt-3, .*ckpt-2, .*ckpt-1 cannot "
                                             r"be read\)"):
    _run(tmp_path, 4)
  assert _folder_snapshot(tmp_path) == before


def test_checkpoints_to_keep_below_two_is_refused(tmp_path):
  with pytest.raises(ConfigError, match=r"checkpoints_to_keep=1; expected >= 2"):
    runner.run_experiment(str(tmp_path), create_experiment=LeastSquaresExperiment, num_iterations=1,
                          gradient_steps_per_iteration=10, checkpoints_to_keep=1)


def test_refused_extension_of_a_finished_run_keeps_done_and_every_file(tmp_path):
  gin.clear_config()
  gin.parse_config("least_squares_learning_rate.value = 0.05")
  try:
    _run(tmp_path, 2)
    before = _folder_snapshot(tmp_path)
    gin.clear_config()
    gin.parse_config("least_squares_learning_rate.value = 0.5")
    with pytest.raises(ConfigError, match=r"other settings"):
      _run(tmp_path, 3)  # more iterations AND other settings
    assert _folder_snapshot(tmp_path) == before  # DONE included: a launcher still sees a finished run
  finally:
    gin.clear_config()


def test_refused_resume_of_another_experiments_checkpoint_keeps_done(tmp_path):
  _run(tmp_path, 1)
  before = _folder_snapshot(tmp_path)
  with pytest.raises(ConfigError, match=r"does not fit this experiment"):
    runner.run_experiment(str(tmp_path), create_experiment=WiderExperiment, num_iterations=2,
                          gradient_steps_per_iteration=10, seed=3)
  assert _folder_snapshot(tmp_path) == before


def _hold_lock_in_subprocess(base_dir):
  code = ("import sys, time\nfrom batch_rl_dr3.run_lock import RunLock\nlock = RunLock(sys.argv[1])\n"
          "lock.acquire()\nprint('held', flush=True)\ntime.sleep(120)\n")
  proc = subprocess.Popen([sys.executable, "-c", code, str(base_dir)], stdout=subprocess.PIPE, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO))
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_second_process_on_the_folder_is_refused_naming_the_holder(tmp_path):
  os.makedirs(tmp_path / "run")
  holder = _hold_lock_in_subprocess(tmp_path / "run")
  try:
    with pytest.raises(ConfigError) as error:
      _run(tmp_path / "run", 1)
    message = first_line(error.value)  # what the command line prints (gin appends its call context below)
    assert f"--base_dir={tmp_path / 'run'} is in use by process {holder.pid} on host {socket.gethostname()}" in message
    assert not os.path.exists(tmp_path / "run" / "metrics.csv")  # nothing written by the refused process
  finally:
    holder.kill()
    holder.wait()
  # The holder died without releasing (kill -9): its lock is stale and taken over.
  assert json.load(open(tmp_path / "run" / "LOCK"))["pid"] == holder.pid
  _run(tmp_path / "run", 1)
  assert os.path.exists(tmp_path / "run" / "DONE") and not os.path.exists(tmp_path / "run" / "LOCK")


def _write_lock(base_dir, host, pid, heartbeat_age):
  os.makedirs(base_dir, exist_ok=True)
  now = time.time()
  with open(os.path.join(base_dir, run_lock.LOCK_FILE), "w") as f:
    json.dump({"host": host, "pid": pid, "started": now - heartbeat_age, "heartbeat": now - heartbeat_age}, f)


def test_lock_of_another_host_is_respected_while_its_heartbeat_is_fresh(tmp_path, caplog):
  _write_lock(tmp_path / "fresh", "other-machine", 1234, heartbeat_age=10)
  with pytest.raises(ConfigError, match=r"in use by process 1234 on host other-machine \(heartbeat 1\d s ago\)"):
    _run(tmp_path / "fresh", 1)
  # A lost machine: no heartbeat for longer than STALE_SECONDS.
  _write_lock(tmp_path / "lost", "other-machine", 1234, heartbeat_age=run_lock.STALE_SECONDS + 60)
  caplog.set_level("WARNING")
  _run(tmp_path / "lost", 1)
  assert any("Taking over the lock" in r.getMessage() and "other-machine" in r.getMessage()
             and "heartbeat is" in r.getMessage() for r in caplog.records)


def test_lock_heartbeat_is_refreshed_and_released(tmp_path, monkeypatch):
  monkeypatch.setattr(run_lock, "HEARTBEAT_SECONDS", 0.05)
  lock = run_lock.RunLock(str(tmp_path))
  with lock:
    first = json.load(open(tmp_path / "LOCK"))["heartbeat"]
    time.sleep(0.3)
    second = json.load(open(tmp_path / "LOCK"))
    assert second["heartbeat"] > first and second["pid"] == os.getpid()
  assert not os.path.exists(tmp_path / "LOCK")


# ---------------------------------------------------------------------------------------------------------
# What the user sees


def test_run_info_holds_the_values_the_user_gave(tmp_path):
  class WithCoefficient(LeastSquaresExperiment):
    def run_info(self):  # a coefficient read back from a float32 variable, as the agents do
      return {"domain": "test", "agent": "least_squares", "dr3_coefficient": float(np.float32(0.1)),
              "alpha": [float(np.float32(0.3))], "exact": 0.1 + 0.2}

  runner.run_experiment(str(tmp_path), create_experiment=WithCoefficient, num_iterations=1,
                        gradient_steps_per_iteration=10)
  text = (tmp_path / "run_info.json").read_text()
  assert '"dr3_coefficient": 0.1,' in text and "0.10000000149011612" not in text
  info = json.loads(text)
  assert info["alpha"] == [0.3] and info["exact"] == 0.1 + 0.2  # a float64 that is not a float32 stays as is


def test_progress_text_shows_losses_first_and_names_diagnostics():
  metrics = {"cql_gap": 1.5, "dr3": 0.25, "dot_product": 3.0, "quantile_loss": 0.125, "total_loss": 0.5,
             "q_data": 2.0, "srank": 40.0, "td_loss": 0.75}
  text = runner.describe_train_metrics(metrics)
  assert text == ("losses: total_loss=0.5 quantile_loss=0.125 td_loss=0.75 | diagnostics: cql_gap=1.5 "
                  "dot_product=3 dr3=0.25 q_data=2 (+1 more in metrics.csv)")
  assert runner.describe_eval_metrics({"return": 12.5, "normalized_score": 35.25}, "atari") == (
      "eval normalized_score=35.25 (% of human: 0 = random, 100 = human) return=12.5")


def test_run_ends_with_a_summary_line(tmp_path, caplog):
  caplog.set_level("INFO")
  _run(tmp_path, 2)
  last = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Run finished")]
  assert len(last) == 1
  final_return = float(_rows(tmp_path)[-1]["eval/return"])
  assert last[0].startswith(f"Run finished: results in {tmp_path} (metrics.csv, tensorboard/, checkpoints/); "
                            f"final eval return={final_return:.4g}")


class ReinitializedExperiment(LeastSquaresExperiment):
  """Resets w to zero after the configured gradient steps (the runner's re-initialization hook)."""

  def __init__(self, seed=0, steps=(), **kwargs):
    super().__init__(seed=seed, **kwargs)
    self.steps, self.calls = tuple(steps), []

  def reinitialization_steps(self):
    return self.steps

  def reinitialize(self, gradient_step):
    self.calls.append((gradient_step, int(self.optimizer.iterations)))
    self.w.assign(tf.zeros([3]))


def test_runner_calls_reinitialize_after_the_configured_global_gradient_steps(tmp_path):
  made = []

  def create(seed):
    made.append(ReinitializedExperiment(seed=seed, steps=(7, 20, 25)))
    return made[-1]

  runner.run_experiment(str(tmp_path), create_experiment=create, num_iterations=3, gradient_steps_per_iteration=10,
                        seed=3, log_every_steps=5)
  # Global steps 7, 20 and 25, each right after that many gradient steps (20: the last step of iteration 1).
  assert made[-1].calls == [(7, 7), (20, 20), (25, 25)]
  # w was zeroed after step 25: 5 SGD steps from zero since, so far from the fit of an un-reset run.
  reference = tmp_path / "reference"
  _run(reference, 3)
  assert abs(float(_rows(tmp_path)[-1]["eval/return"]) - float(_rows(reference)[-1]["eval/return"])) > 1e-3


# ---------------------------------------------------------------------------------------------------------
# SIGTERM (a real signal to this process; the runner's handler is installed in the main thread)


class SigtermExperiment(LeastSquaresExperiment):
  """Sends SIGTERM to its own process once: at a train step (iteration, step) or in an iteration's evaluation."""

  def __init__(self, seed=0, at_step=None, in_evaluation=None):
    super().__init__(seed)
    self.at_step, self.in_evaluation = at_step, in_evaluation
    self.step = 0

  def on_iteration_start(self, iteration):
    super().on_iteration_start(iteration)
    self.step = 0

  def _count_step(self):
    self.step += 1
    if (self.iteration, self.step) == self.at_step:
      os.kill(os.getpid(), signal.SIGTERM)
    return np.int64(self.step)

  def train_step(self):
    # The runner traces train_step into its compiled calls: the signal is sent from a py_function, which runs
    # at every step.
    metrics = super().train_step()
    with tf.control_dependencies(list(metrics.values())):
      tick = tf.py_function(self._count_step, [], tf.int64)
    with tf.control_dependencies([tick]):
      return {name: tf.identity(value) for name, value in metrics.items()}

  def evaluate(self, iteration):
    if iteration == self.in_evaluation:
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(5)  # a long evaluation: the handler stops it at once
      raise AssertionError("the evaluation was not interrupted")
    return super().evaluate(iteration)


def _run_sigterm(base_dir, num_iterations, **kwargs):
  return runner.run_experiment(
      str(base_dir), create_experiment=lambda seed: SigtermExperiment(seed=seed, **kwargs),
      num_iterations=num_iterations, gradient_steps_per_iteration=10, seed=3, log_every_steps=4)


@pytest.mark.parametrize("where", [dict(at_step=(1, 6)), dict(at_step=(1, 10)), dict(in_evaluation=1)],
                         ids=["mid_iteration", "last_step", "in_evaluation"])
def test_sigterm_saves_the_state_and_the_resume_equals_an_uninterrupted_run(tmp_path, where):
  _run(tmp_path / "straight", 3)
  with pytest.raises(RunPreempted, match=r"stopped by SIGTERM (at step|during the evaluation).*rerun the same "):
    _run_sigterm(tmp_path / "stopped", 3, **where)
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the previous handler is back
  state = json.load(open(tmp_path / "stopped" / "checkpoints" / "preempted" / "state.json"))
  assert (state["iteration"], state["step"]) == (1, where.get("at_step", (1, 10))[1])
  assert len(_rows(tmp_path / "stopped")) == 1 and not os.path.exists(tmp_path / "stopped" / "DONE")
  _run(tmp_path / "stopped", 3)
  straight, resumed = _rows(tmp_path / "straight"), _rows(tmp_path / "stopped")
  for key in ("train/loss", "train/w_norm", "eval/return"):
    assert [r[key] for r in resumed] == [r[key] for r in straight], key
  assert not os.path.exists(tmp_path / "stopped" / "checkpoints" / "preempted")


def test_compiled_calls_average_weighted_metrics_over_the_steps_that_computed_them():
  counter = tf.Variable(0)

  @tf.function
  def step():
    counter.assign_add(1)
    index = tf.cast(counter, tf.float32)
    computed = tf.cast(counter % 3 == 0, tf.float32)
    # "third" exists only on steps 3, 6, 9, ...: NaN elsewhere must not leak into its mean.
    return {"index": index, "third": tf.where(computed > 0, index, np.nan), "third#weight": computed,
            "never": tf.constant(np.nan), "never#weight": tf.constant(0.0)}

  steps = runner.CompiledSteps(step)
  latest = [runner.latest_values(steps.run(k)) for k in (4, 4, 2)]
  assert int(counter.numpy()) == 10
  assert steps.means() == {"index": pytest.approx(5.5), "third": pytest.approx(6.0)}  # (3 + 6 + 9) / 3
  assert latest[0] == {"index": 4.0} and latest[2] == {"index": 10.0}
  assert runner.latest_values({"a": tf.constant(2.0), "b": tf.constant(1.0), "b#weight": tf.constant(1.0)}) == {
      "a": 2.0, "b": 1.0}
  steps.reset()
  steps.run(3)
  assert steps.means() == {"index": pytest.approx(12.0), "third": pytest.approx(12.0)}


def test_k_steps_per_call_equal_k_calls_of_one_step():
  """A real offline agent (DQN, in-graph sampling, Adam, target sync every 2 steps): 7 steps as calls of 3, 3, 1
  end with the same weights, optimizer state, RNG states and metric means as 7 calls of one step."""
  from batch_rl_dr3.agents import DQN
  from tests.test_agents import A, TableSampler

  def train(calls):
    tf.keras.utils.set_random_seed(0)
    agent = DQN(A, TableSampler(seed=4), target_update_period=2, seed=5)
    steps = runner.CompiledSteps(agent.train_step)
    for k in calls:
      steps.run(k)
    state = [v.numpy() for v in agent.variables] + [v.numpy() for v in agent.optimizer.variables()]
    return state, steps.means(), int(agent.gradient_steps.numpy())

  one, one_means, one_count = train([1] * 7)
  three, three_means, three_count = train([3, 3, 1])
  assert one_count == three_count == 7
  assert len(one) == len(three) > 10
  for a, b in zip(one, three):
    np.testing.assert_array_equal(a, b)
  assert one_means.keys() == three_means.keys() and "td_loss" in one_means
  for name in one_means:
    assert one_means[name] == three_means[name], name


def test_steps_per_call_gives_the_same_run(tmp_path):
  a = runner.run_experiment(str(tmp_path / "a"), create_experiment=lambda seed: LeastSquaresExperiment(seed=seed),
                            num_iterations=2, gradient_steps_per_iteration=10, seed=3, log_every_steps=4)
  b = runner.run_experiment(str(tmp_path / "b"), create_experiment=lambda seed: LeastSquaresExperiment(seed=seed),
                            num_iterations=2, gradient_steps_per_iteration=10, seed=3, log_every_steps=4,
                            steps_per_call=3)
  assert a["train/loss"] == b["train/loss"] and a["eval/return"] == b["eval/return"]
  with pytest.raises(ConfigError, match="steps_per_call=0"):
    runner.run_experiment(str(tmp_path / "c"), create_experiment=LeastSquaresExperiment, steps_per_call=0)


def test_sums_continue_exactly_after_a_sigterm_state():
  def make_step(start):
    counter = tf.Variable(start)

    @tf.function
    def step():
      counter.assign_add(1)
      x = tf.cast(counter, tf.float32) / 7.0  # sums with rounding in every addition
      return {"x": x, "y": tf.sqrt(x), "y#weight": tf.cast(counter % 2 == 0, tf.float32)}
    return step

  straight = runner.CompiledSteps(make_step(0))
  straight.run(3)
  state = json.loads(json.dumps(straight.state()))  # as the SIGTERM state file stores it
  straight.run(5)
  resumed = runner.CompiledSteps(make_step(3))
  resumed.load_state(state)
  resumed.run(5)
  assert resumed.means() == straight.means()  # bit for bit
  assert straight.means()["y"] == pytest.approx(np.mean(np.sqrt(np.arange(2, 9, 2) / 7.0)), rel=1e-6)
