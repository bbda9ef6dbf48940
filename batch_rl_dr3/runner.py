"""The one training loop, shared by the Atari and the continuous paths.

A run is a sequence of iterations: `gradient_steps_per_iteration` train steps, then evaluation, then one row
of metrics and an atomic checkpoint. Everything domain-specific lives in an *experiment* object (see
`Experiment`); this module owns the run folder:

  <base_dir>/run_info.json      what was run (domain, game/task, agent, label, setting, seed, ...)
  <base_dir>/config.gin         the gin config (parsed at start, operative after the first iteration)
  <base_dir>/metrics.csv        one row per iteration: iteration, gradient_steps, train/*, eval/*
  <base_dir>/metrics.jsonl      the same rows as JSON lines
  <base_dir>/tensorboard/       TensorBoard events (train/* and eval/* scalars, x = gradient steps)
  <base_dir>/checkpoints/       tf.train.CheckpointManager: nets, optimizers, step counters, RNGs, samplers
  <base_dir>/DONE               written when the last iteration is checkpointed
  <base_dir>/LOCK               while a process runs in the folder (see `run_lock`)

Resume: rerunning the same command restores the last checkpoint and continues from the next iteration; the
metric rows of iterations after that checkpoint (written by a run killed before it could checkpoint) are
dropped and recomputed. Every random stream lives in checkpointed state or is derived from (seed, iteration),
so a resumed run continues exactly as the uninterrupted one would. A checkpoint that cannot be read
(truncated by a full disk, ...) is named in one warning and the newest intact one is used instead.

Every check (lock, settings against the run's start, checkpoint fit) happens before anything in the folder is
changed, so a refused resume leaves it exactly as it was.

SIGTERM (preemption): the loop saves the state at the next step boundary into checkpoints/preempted/ (with the
iteration's partial metric sums), raises `RunPreempted` (the command exits 0 with a line saying so), and a
rerun continues from that step exactly as the uninterrupted run. During the end-of-iteration diagnostics and
evaluation (deterministic in seed and iteration) a SIGTERM stops them at once; the rerun redoes them.
"""
import contextlib
import csv
import io
import json
import math
import os
import signal
import threading
import time
from typing import Any, Dict, Optional, Protocol, Sequence

from absl import logging
import gin
import numpy as np
import tensorflow as tf

from batch_rl_dr3 import diagnostics
from batch_rl_dr3 import labels
from batch_rl_dr3 import reference_scores
from batch_rl_dr3 import run_lock
from batch_rl_dr3.errors import ConfigError, DataError, RunPreempted, TrainingDivergedError, first_line
from batch_rl_dr3.progress import Progress

CHECKPOINT_SUBDIR = "checkpoints"
DONE_FILE = "DONE"
RUN_INFO_FILE = "run_info.json"
METRICS_CSV = "metrics.csv"
METRICS_JSONL = "metrics.jsonl"
CONFIG_FILE = "config.gin"
# The settings a run started with; a resume must match them (see `_check_resume_config`).
START_CONFIG_FILE = "start_config.gin"
# A SIGTERM's mid-iteration checkpoint lives in checkpoints/preempted/ until the iteration's own checkpoint.
PREEMPTED_SUBDIR = "preempted"
PREEMPTED_STATE = "state.json"
# Bindings a resume may change without changing what is computed (or that extend the run).
RESUMABLE_CHANGES = ("run_experiment.num_iterations", "run_experiment.log_every_steps",
                     "run_experiment.tensorboard", "run_experiment.checkpoints_to_keep", "evaluate.progress")


class Experiment(Protocol):
  """What the runner needs from a domain (Atari, continuous control)."""

  def trackables(self) -> Dict[str, Any]:
    """Name -> tf trackable; everything a resumed run needs (nets, optimizers, counters, RNGs, samplers)."""

  def on_iteration_start(self, iteration: int) -> None:
    """E.g. swap the resident replay checkpoints; must be deterministic in (seed, iteration)."""

  def train_step(self) -> Dict[str, tf.Tensor]:
    """One gradient step; scalar metrics by name."""

  def evaluate(self, iteration: int) -> Dict[str, float]:
    """Evaluation metrics by name ({} when evaluation is off)."""

  def diagnostics(self, iteration: int) -> Dict[str, float]:
    """Extra end-of-iteration train metrics (e.g. srank on a fixed batch)."""

  def run_info(self) -> Dict[str, Any]:
    """Description of the run for run_info.json (domain, game or task, agent, label, ...)."""

  # Optional: work before the first train step of this process, after the checkpoint is restored, outside the
  # compiled train loop (e.g. BRAC's behaviour pre-training):
  # def before_training(self) -> None.
  # Optional: layer re-initialization during training (Atari: OfflineAgent.reinitialize_*).
  # def reinitialization_steps(self) -> Sequence[int]: gradient steps (from 1, whole run) to call it after;
  # def reinitialize(self, gradient_step: int) -> None.


def _atomic_write(path: str, text: str) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  with tf.io.gfile.GFile(tmp, "w") as f:
    f.write(text)
  tf.io.gfile.rename(tmp, path, overwrite=True)


def _finite(value) -> bool:
  return value is None or not isinstance(value, float) or math.isfinite(value)


class MetricsLog:
  """metrics.csv + metrics.jsonl (rewritten atomically per row) and TensorBoard scalars."""

  def __init__(self, base_dir: str, tensorboard: bool = True):
    self._csv_path = os.path.join(base_dir, METRICS_CSV)
    self._jsonl_path = os.path.join(base_dir, METRICS_JSONL)
    self._rows = self._read_rows()
    self._writer = (tf.summary.create_file_writer(os.path.join(base_dir, "tensorboard"))
                    if tensorboard else None)

  def _read_rows(self):
    if not tf.io.gfile.exists(self._jsonl_path):
      return []
    with tf.io.gfile.GFile(self._jsonl_path) as f:
      return [json.loads(line) for line in f if line.strip()]

  @property
  def rows(self):
    return list(self._rows)

  def truncate(self, num_iterations_kept: int) -> None:
    """Drop rows of iterations >= num_iterations_kept (written after the last checkpoint)."""
    kept = [r for r in self._rows if r["iteration"] < num_iterations_kept]
    if len(kept) != len(self._rows):
      logging.info("Dropping %d metric rows written after the last checkpoint.", len(self._rows) - len(kept))
      self._rows = kept
      self._flush()

  def append(self, row: Dict[str, Any]) -> None:
    self._rows.append(row)
    self._flush()
    if self._writer is not None:
      with self._writer.as_default(step=int(row["gradient_steps"])):
        for name, value in row.items():
          if name not in ("iteration", "gradient_steps") and isinstance(value, (int, float)):
            tf.summary.scalar(name, value)
      self._writer.flush()

  def _flush(self) -> None:
    columns = ["iteration", "gradient_steps"]
    for row in self._rows:
      columns += sorted(k for k in row if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(self._rows)
    _atomic_write(self._csv_path, buf.getvalue())
    _atomic_write(self._jsonl_path, "".join(json.dumps(r) + "\n" for r in self._rows))


def _config_for_resume() -> str:
  """The parsed gin config without the bindings a resume may change."""
  lines = gin.config_str().splitlines()
  return "\n".join(line for line in lines if not line.startswith(RESUMABLE_CHANGES)).strip() + "\n"


def _check_resume_config(base_dir: str, has_checkpoint: bool) -> str:
  """A resumed run must use the settings it started with: a changed agent, dataset or coefficient would mix
  two experiments in one folder (and coefficients held in variables would silently keep their old values).
  Returns the settings to record in START_CONFIG_FILE for a new run (written by the caller once every check
  has passed)."""
  path = os.path.join(base_dir, START_CONFIG_FILE)
  current = _config_for_resume()
  if has_checkpoint and tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      started = f.read()
    if started != current:
      old, new = set(started.splitlines()), set(current.splitlines())
      changed = sorted((new - old) | (old - new), key=lambda l: (l.split("=")[0], l not in old))
      shown = "; ".join(("was: " if l in old else "now: ") + l.strip() for l in changed if l.strip()[:1] != "#")
      raise ConfigError(f"--base_dir={base_dir} holds a run started with other settings ({shown}). Resume it "
                        f"with its own config ({path}) or use a new --base_dir.")
  return current


def _check_writable(base_dir: str) -> None:
  try:
    tf.io.gfile.makedirs(base_dir)
    probe = os.path.join(base_dir, f".write-probe-{os.getpid()}")
    with tf.io.gfile.GFile(probe, "w") as f:
      f.write("ok")
    tf.io.gfile.remove(probe)
  except (tf.errors.OpError, OSError) as e:
    raise ConfigError(f"--base_dir={base_dir} is not writable: {e}") from None


def _to_float(value) -> float:
  return float(np.asarray(value))


# A step's metrics may weight a metric (`diagnostics.weighted`): `{"dot_product": v, "dot_product#weight": 0 or
# 1}` says whether this step computed it (metrics computed every k steps). The iteration's mean of a weighted
# metric is over the steps that computed it; the weights themselves are not reported.
WEIGHT_SUFFIX = diagnostics.WEIGHT_SUFFIX


class CompiledSteps:
  """Train steps in compiled calls, the per-iteration metric sums accumulated inside the call.

  `run(k)` runs `k` train steps in ONE tf.function call (a graph loop; `k` is a tensor, so any k reuses one
  trace) and adds every step's metrics to float64 sums and counts held in variables, so the train loop issues
  no op per step; it returns the last step's metrics. `means()` reads the iteration's means, `reset()` zeroes
  the sums. k steps in one call compute exactly what k calls of the step compute (tested). The experiment's
  `train_step` is traced into the call: it must be graph code (a tf.function or ops only, no per-step Python).
  """

  def __init__(self, train_step):
    self._train_step = train_step
    self._sums: Dict[str, tf.Variable] = {}
    self._counts: Dict[str, tf.Variable] = {}
    self._run = tf.function(self._steps, autograph=False)

  def _accumulate(self, metrics: Dict[str, tf.Tensor]) -> None:
    for name, value in metrics.items():
      if name.endswith(WEIGHT_SUFFIX):
        continue
      weight = tf.cast(metrics.get(name + WEIGHT_SUFFIX, 1.0), tf.float64)
      if name not in self._sums:
        with tf.init_scope():  # created once, on the first trace, outside the graph
          self._sums[name] = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="sum")
          self._counts[name] = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="count")
      value = tf.cast(tf.reshape(value, []), tf.float64)
      self._sums[name].assign_add(tf.where(weight > 0, weight * value, tf.zeros_like(value)))
      self._counts[name].assign_add(weight)

  def _steps(self, num_steps):
    metrics = self._train_step()
    self._accumulate(metrics)  # the first step creates the variables (on the first trace)

    def body(i, _):
      metrics = self._train_step()
      self._accumulate(metrics)
      return i + 1, metrics

    _, metrics = tf.while_loop(lambda i, _: i < num_steps - 1, body, (tf.constant(0), metrics))
    return metrics

  def run(self, num_steps: int) -> Dict[str, tf.Tensor]:
    """`num_steps` >= 1 train steps in one compiled call; the last step's metrics."""
    return self._run(tf.constant(int(num_steps), tf.int32))

  def means(self) -> Dict[str, float]:
    """Mean of each metric over the steps since `reset` (weighted metrics: over the steps that computed them;
    a weighted metric that no step computed is left out)."""
    out = {}
    for name, total in self._sums.items():
      count = float(self._counts[name].numpy())
      if count > 0:
        out[name] = float(total.numpy()) / count
    return out

  def reset(self) -> None:
    for variable in list(self._sums.values()) + list(self._counts.values()):
      variable.assign(tf.zeros_like(variable))

  def state(self) -> Dict[str, Any]:
    """The sums and counts (exact: float64 values are Python floats), to continue after a SIGTERM."""
    return {"sums": {name: [float(total.numpy()), float(self._counts[name].numpy())]
                     for name, total in self._sums.items()}}

  def load_state(self, state: Dict[str, Any]) -> None:
    """Continue an iteration from `state()` (the sums start where they were: the same additions, in the same
    order, as the uninterrupted iteration)."""
    self._run.get_concrete_function(tf.TensorSpec([], tf.int32))  # traced: the variables exist
    for name, (total, count) in state["sums"].items():
      if name in self._sums:
        self._sums[name].assign(float(total))
        self._counts[name].assign(float(count))


def latest_values(metrics: Dict[str, tf.Tensor]) -> Dict[str, float]:
  """A step's metrics as floats, weights dropped and weighted metrics the step did not compute left out."""
  values = {k: _to_float(v) for k, v in metrics.items()}
  return {k: v for k, v in values.items()
          if not k.endswith(WEIGHT_SUFFIX) and values.get(k + WEIGHT_SUFFIX, 1.0) > 0}


def _check_finite(metrics: Dict[str, float], where: str, checkpoint_note: str) -> None:
  bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
  if bad:
    name, value = next(iter(sorted(bad.items())))
    raise TrainingDivergedError(
        f"train/{name} became {value} {where}; the run is stopped. {checkpoint_note} "
        "(lower the learning rate or a penalty coefficient, or check the data for NaN rewards)")


def _read_done(base_dir: str) -> Optional[Dict[str, Any]]:
  path = os.path.join(base_dir, DONE_FILE)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.loads(f.read())


def _user_value(value):
  """Values as the user wrote them: a float32 read back from a variable (0.10000000149011612) becomes the
  shortest decimal that is the same float32 (0.1); containers recursively; everything else unchanged."""
  if isinstance(value, dict):
    return {k: _user_value(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_user_value(v) for v in value]
  if isinstance(value, (float, np.floating)) and math.isfinite(value):
    single = np.float32(value)
    if float(single) == float(value):
      return float(np.format_float_positional(single, unique=True, trim="-"))
    return float(value)
  return value


class _EvaluationInterrupted(Exception):
  """Raised by the SIGTERM handler inside diagnostics/evaluation, which may take minutes: they are redone."""


class _Preemption:
  """SIGTERM (what a TPU VM, a spot machine or a batch scheduler sends before stopping a job) -> a flag the
  train loop reads at every step boundary; installed only in the main thread (where Python runs handlers).
  During `interruptible()` (the end-of-iteration diagnostics and evaluation, deterministic in (seed, iteration)
  and so redone on resume) the handler stops them at once instead."""

  def __init__(self):
    self.requested = False
    self._previous = None
    self._interruptible = False

  def _handler(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = True
    if self._interruptible:
      self._interruptible = False
      logging.warning("SIGTERM received during evaluation: stopping it (it is redone on resume), saving the "
                      "trained steps, then exiting.")
      raise _EvaluationInterrupted()
    logging.warning("SIGTERM received: saving a checkpoint at the next step boundary, then exiting.")

  @contextlib.contextmanager
  def interruptible(self):
    self._interruptible = True
    try:
      yield
    finally:
      self._interruptible = False

  def __enter__(self) -> "_Preemption":
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handler)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


@gin.configurable(denylist=["base_dir"])
def run_experiment(base_dir: str, create_experiment=gin.REQUIRED, num_iterations: int = 100,
                   gradient_steps_per_iteration: int = 62_500, seed: int = 0, log_every_steps: int = 1000,
                   checkpoints_to_keep: int = 3, tensorboard: bool = True, steps_per_call: int = 1,
                   deterministic_ops: bool = False, init_from: Optional[str] = None) -> Dict[str, Any]:
  """Runs (or resumes) one experiment into `base_dir`. Returns the last metrics row.

  Args:
    base_dir: the run folder (local path or any tf.io.gfile URL, e.g. gs://). Locked while the run writes
      into it (see `run_lock`): a second process on it stops with one line naming the holder.
    create_experiment: a callable `(seed=...) -> Experiment`, e.g. `@AtariExperiment` in gin.
    num_iterations: iterations in the whole run.
    gradient_steps_per_iteration: train steps per iteration (62,500 in the DQN Replay papers).
    seed: seeds data sampling, network init, exploration and evaluation environments.
    log_every_steps: the train progress (steps/s, ETA, losses) and the NaN check every this many steps.
    steps_per_call: train steps per compiled call (a graph loop; the results are those of one step per call).
      1 suffices on CPU, where a step's Python dispatch is ~1 % of it; raise it on accelerators where dispatch
      dominates. Calls never cross a log point or the iteration's end; a SIGTERM stops at the end of a call.
    checkpoints_to_keep: how many iteration checkpoints stay on disk (>= 2: when the newest is corrupted, the
      run continues from the newest intact one).
    tensorboard: write TensorBoard events.
    deterministic_ops: `tf.config.experimental.enable_op_determinism()`: bit-identical resumes on GPU/TPU,
      where some kernels are otherwise nondeterministic; CPU kernels used here are deterministic already.
    init_from: a run folder (or one of its checkpoints) whose weights start this run (`train --init_from`; the
      DR3 paper's Fig. 2: continue a DR3 run's Q-function without DR3). Only what `experiment.initial_weights()`
      names is copied (the Atari agent's online and target networks): the optimizer, counters and sampler start
      fresh. The source is recorded in run_info.json (`init_from`); a resume continues from this run's own
      checkpoints, and as a gin setting a changed init_from is refused like any other changed setting.

  Raises:
    RunPreempted: after a SIGTERM, once the checkpoint of the current step is saved (rerun to resume).
  """
  if log_every_steps < 1 or gradient_steps_per_iteration < 1 or num_iterations < 1 or steps_per_call < 1:
    raise ConfigError(f"run_experiment: num_iterations={num_iterations}, gradient_steps_per_iteration="
                      f"{gradient_steps_per_iteration}, log_every_steps={log_every_steps}, steps_per_call="
                      f"{steps_per_call}; expected each >= 1")
  if checkpoints_to_keep < 2:
    raise ConfigError(f"run_experiment.checkpoints_to_keep={checkpoints_to_keep}; expected >= 2 (a corrupted "
                      "newest checkpoint is replaced by the one before it)")
  _check_writable(base_dir)
  with run_lock.RunLock(base_dir), _Preemption() as preemption:
    return _run_locked(base_dir, create_experiment, num_iterations, gradient_steps_per_iteration, seed,
                       log_every_steps, checkpoints_to_keep, tensorboard, deterministic_ops, init_from, preemption,
                       steps_per_call)


def _restore(checkpoint: tf.train.Checkpoint, paths: Sequence[str], base_dir: str) -> Optional[str]:
  """Restores the newest intact checkpoint of `paths` (oldest first); returns its path (None: no paths).

  A checkpoint that cannot be read (truncated, missing files) gets one warning line naming it and the next
  older one is tried; none intact -> DataError. One that reads but does not fit the experiment -> ConfigError.
  """
  unreadable = []
  for path in reversed(list(paths)):
    try:
      checkpoint.restore(path).assert_existing_objects_matched()
    except (IndexError, tf.errors.OpError) as e:
      files = tf.io.gfile.glob(path + ".*")
      logging.warning("Checkpoint %s cannot be read (%s: %s; files: %s); trying the one before it.", path,
                      type(e).__name__, first_line(e), ", ".join(os.path.basename(f) for f in sorted(files)))
      unreadable.append(path)
      continue
    except (ValueError, AssertionError) as e:
      raise ConfigError(f"--base_dir={base_dir}: its checkpoint {path} does not fit this experiment "
                        f"({first_line(e)}); use a new --base_dir") from None
    if unreadable:
      logging.warning("Continuing from %s, the newest intact checkpoint (%d newer one(s) unreadable: %s).", path,
                      len(unreadable), ", ".join(unreadable))
    return path
  if unreadable:
    raise DataError(f"--base_dir={base_dir}: no intact checkpoint is left ({', '.join(unreadable)} cannot be "
                    f"read); move {os.path.join(base_dir, CHECKPOINT_SUBDIR)} aside to start over, or use a new "
                    f"--base_dir")
  return None


def _read_preempted(checkpoint_dir: str) -> Optional[Dict[str, Any]]:
  path = os.path.join(checkpoint_dir, PREEMPTED_SUBDIR, PREEMPTED_STATE)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.loads(f.read())


def _remove_preempted(checkpoint_dir: str) -> None:
  folder = os.path.join(checkpoint_dir, PREEMPTED_SUBDIR)
  if tf.io.gfile.exists(folder):
    tf.io.gfile.rmtree(folder)


def _run_locked(base_dir, create_experiment, num_iterations, gradient_steps_per_iteration, seed,
                log_every_steps, checkpoints_to_keep, tensorboard, deterministic_ops, init_from, preemption,
                steps_per_call=1):
  done_path = os.path.join(base_dir, DONE_FILE)
  done = _read_done(base_dir)
  if done is not None and done.get("iterations", 0) >= num_iterations:
    logging.info("Run in %s is already finished (%s); nothing to do.", base_dir, done)
    rows = MetricsLog(base_dir, tensorboard=False).rows
    return rows[-1] if rows else {}
  checkpoint_dir = os.path.join(base_dir, CHECKPOINT_SUBDIR)
  # Every check comes before the first change to the folder: a refused resume leaves it as it was.
  has_checkpoint = tf.train.latest_checkpoint(checkpoint_dir) is not None
  start_config = _check_resume_config(base_dir, has_checkpoint)
  if deterministic_ops:
    tf.config.experimental.enable_op_determinism()

  # Network initializers: tf-keras draws unseeded initializer seeds from Python's `random`, so seed Python,
  # NumPy and TF together. Every stream used after construction is a checkpointed tf.random.Generator.
  tf.keras.utils.set_random_seed(seed)
  experiment = create_experiment(seed=seed)

  iteration_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="iteration")
  step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_iteration")
  trackables = experiment.trackables()
  checkpoint = tf.train.Checkpoint(iteration=iteration_var, **trackables)
  # A SIGTERM's checkpoint: the iteration's state plus how many of its steps are done.
  step_checkpoint = tf.train.Checkpoint(iteration=iteration_var, step_in_iteration=step_var, **trackables)
  manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir, max_to_keep=checkpoints_to_keep)
  restored = _restore(checkpoint, manager.checkpoints, base_dir)
  start, start_step, sums = int(iteration_var), 0, None
  preempted = _read_preempted(checkpoint_dir) if restored else None
  if preempted is not None and preempted["iteration"] == start:
    path = os.path.join(checkpoint_dir, PREEMPTED_SUBDIR, preempted["checkpoint"])
    try:
      step_checkpoint.restore(path).assert_existing_objects_matched()
      start_step, sums = int(step_var), preempted["sums"]
      restored = path
    except (IndexError, ValueError, AssertionError, tf.errors.OpError) as e:
      logging.warning("The SIGTERM checkpoint %s cannot be read (%s); continuing from %s.", path, first_line(e),
                      restored)
      _restore(checkpoint, [restored], base_dir)
  if restored:
    logging.info("Resumed from %s (iteration %d, %d of its steps done).", restored, start, start_step)
  source = None
  if init_from:
    if restored:  # resumed: the weights came from init_from when the run started
      with tf.io.gfile.GFile(os.path.join(base_dir, RUN_INFO_FILE)) as f:
        source = json.loads(f.read()).get("init_from")
    else:
      source = _initialize_from(experiment, init_from)

  # All checks passed: from here on the folder changes.
  if done is not None:
    logging.info("Extending the finished run in %s from %d to %d iterations.", base_dir, done["iterations"],
                 num_iterations)
    tf.io.gfile.remove(done_path)
  if not has_checkpoint:
    _atomic_write(os.path.join(base_dir, START_CONFIG_FILE), start_config)
  info = _user_value(dict(experiment.run_info(), seed=seed, num_iterations=num_iterations,
                          gradient_steps_per_iteration=gradient_steps_per_iteration))
  if source is not None:
    info["init_from"] = source
    _label_with_source(info, source)
  _atomic_write(os.path.join(base_dir, RUN_INFO_FILE), json.dumps(info, indent=2, sort_keys=True) + "\n")
  if not restored:
    _atomic_write(os.path.join(base_dir, CONFIG_FILE), gin.config_str())
  metrics_log = MetricsLog(base_dir, tensorboard=tensorboard)
  metrics_log.truncate(start)

  row: Dict[str, Any] = metrics_log.rows[-1] if metrics_log.rows else {}
  total_steps = num_iterations * gradient_steps_per_iteration
  # One line every log_every_steps when not on a terminal (that is what the binding asks for).
  progress = Progress("train", total_steps, "steps", initial=start * gradient_steps_per_iteration + start_step,
                      every_seconds=0)
  reinitialization_steps = set(getattr(experiment, "reinitialization_steps", tuple)())
  getattr(experiment, "before_training", lambda: None)()
  accumulator = CompiledSteps(experiment.train_step)
  for iteration in range(start, num_iterations):
    checkpoint_note = (f"Last good checkpoint: iteration {iteration} in {manager.directory}."
                       if iteration > 0 else "No checkpoint was written yet.")
    experiment.on_iteration_start(iteration)
    accumulator.reset()
    first_step = 1
    if iteration == start and start_step:
      accumulator.load_state(sums)
      first_step = start_step + 1
    t0 = time.time()
    shown_step = first_step - 1
    step = first_step - 1
    while step < gradient_steps_per_iteration:
      # A call never crosses a log point, a re-initialization step or the iteration's end.
      call = min(steps_per_call, log_every_steps - step % log_every_steps, gradient_steps_per_iteration - step)
      base = iteration * gradient_steps_per_iteration
      upcoming = [g - base - step for g in reinitialization_steps if 0 < g - base - step < call]
      call = min([call] + upcoming)
      metrics = accumulator.run(call)
      step += call
      if base + step in reinitialization_steps:
        experiment.reinitialize(base + step)
      if step % log_every_steps == 0 or step == gradient_steps_per_iteration:
        latest = latest_values(metrics)
        global_step = iteration * gradient_steps_per_iteration + step
        _check_finite(latest, f"at gradient step {global_step} (iteration {iteration})", checkpoint_note)
        progress.update(step - shown_step, f"iteration {iteration} | {describe_train_metrics(latest)}")
        shown_step = step
      if preemption.requested:
        progress.close()
        _save_step_checkpoint(step_checkpoint, step_var, checkpoint_dir, iteration, step, accumulator)
        raise RunPreempted(f"stopped by SIGTERM at step {step} of iteration {iteration}; the checkpoint is "
                           f"saved in {checkpoint_dir}: rerun the same command to resume from there")
    train_metrics = accumulator.means()
    _check_finite(train_metrics, f"in iteration {iteration}", checkpoint_note)
    train_seconds = time.time() - t0
    try:
      with preemption.interruptible():
        train_metrics.update(experiment.diagnostics(iteration))
        eval_metrics = experiment.evaluate(iteration)
    except _EvaluationInterrupted:
      progress.close()
      _save_step_checkpoint(step_checkpoint, step_var, checkpoint_dir, iteration, gradient_steps_per_iteration,
                            accumulator)
      raise RunPreempted(f"stopped by SIGTERM during the evaluation of iteration {iteration}; its trained steps "
                         f"are saved in {checkpoint_dir}: rerun the same command to evaluate and continue") from None

    row = {"iteration": iteration, "gradient_steps": (iteration + 1) * gradient_steps_per_iteration}
    row.update({f"train/{k}": v for k, v in sorted(train_metrics.items())})
    row.update({f"eval/{k}": float(v) for k, v in sorted(eval_metrics.items())})
    row["time/train_steps_per_second"] = (gradient_steps_per_iteration - first_step + 1) / max(train_seconds, 1e-9)
    metrics_log.append(row)
    iteration_var.assign(iteration + 1)
    manager.save(checkpoint_number=iteration + 1)
    _remove_preempted(checkpoint_dir)
    if iteration == start:
      _atomic_write(os.path.join(base_dir, CONFIG_FILE), gin.operative_config_str())
    logging.info("iteration %d done: %s", iteration, describe_eval_metrics(eval_metrics, info.get("domain")))
    if preemption.requested and iteration + 1 < num_iterations:
      progress.close()
      raise RunPreempted(f"stopped by SIGTERM after iteration {iteration}; its checkpoint is saved in "
                         f"{checkpoint_dir}: rerun the same command to resume from there")
  progress.close()

  _atomic_write(done_path, json.dumps({"iterations": num_iterations,
                                       "gradient_steps": total_steps}) + "\n")
  logging.info("Run finished: results in %s (metrics.csv, tensorboard/, checkpoints/); final %s", base_dir,
               describe_eval_metrics({k[len("eval/"):]: v for k, v in row.items() if k.startswith("eval/")},
                                     info.get("domain")) or "(no evaluation)")
  return row


def _label_with_source(info: Dict[str, Any], source: Dict[str, Any]) -> None:
  """A run started from another run's weights is another experiment (the paper's Fig. 2): its derived label
  gets the setting init_from=<the source's label> (brackets for the source's parentheses), so the report never
  pools it with runs trained from scratch. An explicit label is left as given."""
  parts, agent = info.get("label_parts"), info.get("agent")
  if not isinstance(parts, dict) or not agent or info.get("label") != labels.label_from_parts(agent, parts):
    return
  source_label = str(source.get("label") or os.path.basename(os.path.normpath(source["run_dir"])))
  parts.setdefault("settings", {})["init_from"] = source_label.replace(" (", "[").replace(")", "]")
  info["label"] = labels.label_from_parts(agent, parts)


def _initialize_from(experiment, init_from: str) -> Dict[str, Any]:
  """Copies the source run's weights (what `experiment.initial_weights()` names) into the new experiment.

  `init_from` is a run folder (its latest checkpoint is used) or a checkpoint path (`<run>/checkpoints/ckpt-N`).
  Returns what run_info.json records about the source: folder, checkpoint, its label and iteration.
  """
  weights = getattr(experiment, "initial_weights", None)
  if weights is None:
    raise ConfigError(f"run_experiment.init_from={init_from!r}: {type(experiment).__name__} cannot be initialized "
                      f"from another run (it has no initial_weights())")
  path = init_from
  if tf.io.gfile.isdir(init_from):
    path = tf.train.latest_checkpoint(os.path.join(init_from, CHECKPOINT_SUBDIR))
    if path is None:
      raise ConfigError(f"run_experiment.init_from={init_from!r}: no checkpoint in "
                        f"{os.path.join(init_from, CHECKPOINT_SUBDIR)}; expected a run folder written by train")
  elif not tf.io.gfile.exists(path + ".index"):
    raise ConfigError(f"run_experiment.init_from={init_from!r}: neither a run folder nor a checkpoint "
                      f"(<run>/checkpoints/ckpt-N)")
  source_dir = os.path.dirname(os.path.dirname(path))
  try:
    tf.train.Checkpoint(**weights()).restore(path).expect_partial().assert_existing_objects_matched()
  except (ValueError, AssertionError, tf.errors.OpError) as e:
    raise ConfigError(f"run_experiment.init_from={init_from!r}: its checkpoint {path} does not fit this "
                      f"experiment's networks ({first_line(e)})") from None
  source = {"run_dir": source_dir, "checkpoint": path}
  info_path = os.path.join(source_dir, RUN_INFO_FILE)
  if tf.io.gfile.exists(info_path):
    with tf.io.gfile.GFile(info_path) as f:
      source_info = json.loads(f.read())
    source.update({k: source_info[k] for k in ("label", "agent", "game", "seed") if k in source_info})
  source["iteration"] = int(tf.train.load_checkpoint(path).get_tensor("iteration/.ATTRIBUTES/VARIABLE_VALUE"))
  logging.info("Initialized from %s (iteration %d of %s).", path, source["iteration"], source_dir)
  return source


def _save_step_checkpoint(step_checkpoint, step_var, checkpoint_dir, iteration, step, accumulator) -> None:
  """The state after `step` steps of `iteration`: its own folder beside the iteration checkpoints, written
  before its state file, which names it (a kill between the two leaves the iteration checkpoints in charge)."""
  step_var.assign(step)
  folder = os.path.join(checkpoint_dir, PREEMPTED_SUBDIR)
  tf.io.gfile.makedirs(folder)
  path = step_checkpoint.write(os.path.join(folder, f"ckpt-{iteration}-{step}"))
  state = {"iteration": iteration, "step": step, "checkpoint": os.path.basename(path),
           "sums": accumulator.state()}
  _atomic_write(os.path.join(folder, PREEMPTED_STATE), json.dumps(state) + "\n")


def describe_train_metrics(metrics: Dict[str, float], max_diagnostics: int = 4) -> str:
  """'losses: a=.. b=.. | diagnostics: c=..': the losses (names with 'loss') first, the rest named as
  diagnostics (measurements that do not drive the update, e.g. dot products, Q averages)."""
  losses = sorted((k for k in metrics if "loss" in k), key=lambda k: (k != "total_loss", k))
  others = sorted(k for k in metrics if "loss" not in k)
  text = "losses: " + " ".join(f"{k}={metrics[k]:.4g}" for k in losses) if losses else ""
  if others:
    shown = " ".join(f"{k}={metrics[k]:.4g}" for k in others[:max_diagnostics])
    more = f" (+{len(others) - max_diagnostics} more in metrics.csv)" if len(others) > max_diagnostics else ""
    text += (" | " if text else "") + f"diagnostics: {shown}{more}"
  return text


def describe_eval_metrics(metrics: Dict[str, float], domain: Optional[str]) -> str:
  """The evaluation metrics, the normalized score with its unit."""
  parts = [f"{k}={v:.4g}" for k, v in sorted(metrics.items()) if k != "normalized_score"]
  if "normalized_score" in metrics:
    parts.insert(0, f"normalized_score={metrics['normalized_score']:.4g} "
                    f"({reference_scores.normalized_score_unit(domain)})")
  return "eval " + " ".join(parts) if parts else ""
