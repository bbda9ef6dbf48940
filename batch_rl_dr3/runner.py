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

Resume: rerunning the same command restores the last checkpoint and continues from the next iteration; the
metric rows of iterations after that checkpoint (written by a run killed before it could checkpoint) are
dropped and recomputed. Every random stream lives in checkpointed state or is derived from (seed, iteration),
so a resumed run continues exactly as the uninterrupted one would.
"""
import csv
import io
import json
import math
import os
import time
from typing import Any, Dict, Optional, Protocol

from absl import logging
import gin
import numpy as np
import tensorflow as tf

from batch_rl_dr3.errors import ConfigError, TrainingDivergedError, first_line

CHECKPOINT_SUBDIR = "checkpoints"
DONE_FILE = "DONE"
RUN_INFO_FILE = "run_info.json"
METRICS_CSV = "metrics.csv"
METRICS_JSONL = "metrics.jsonl"
CONFIG_FILE = "config.gin"
# The settings a run started with; a resume must match them (see `_check_resume_config`).
START_CONFIG_FILE = "start_config.gin"
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


def _check_resume_config(base_dir: str, has_checkpoint: bool) -> None:
  """A resumed run must use the settings it started with: a changed agent, dataset or coefficient would mix
  two experiments in one folder (and coefficients held in variables would silently keep their old values)."""
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
  elif not has_checkpoint:
    _atomic_write(path, current)


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


class _MeanAccumulator:
  """Per-iteration means of the step metrics, kept as tensors so the train loop never waits on the device."""

  def __init__(self):
    self._sums, self._count = {}, 0

  def add(self, metrics: Dict[str, tf.Tensor]) -> None:
    for name, value in metrics.items():
      self._sums[name] = value if name not in self._sums else self._sums[name] + value
    self._count += 1

  def means(self) -> Dict[str, float]:
    return {name: _to_float(total) / max(self._count, 1) for name, total in self._sums.items()}


def _check_finite(metrics: Dict[str, float], where: str, checkpoint_note: str) -> None:
  bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
  if bad:
    name, value = next(iter(sorted(bad.items())))
    raise TrainingDivergedError(
        f"train/{name} became {value} {where}; the run is stopped. {checkpoint_note} "
        "(lower the learning rate or a penalty coefficient, or check the data for NaN rewards)")


@gin.configurable(denylist=["base_dir"])
def run_experiment(base_dir: str, create_experiment=gin.REQUIRED, num_iterations: int = 100,
                   gradient_steps_per_iteration: int = 62_500, seed: int = 0, log_every_steps: int = 1000,
                   checkpoints_to_keep: int = 2, tensorboard: bool = True,
                   deterministic_ops: bool = False, init_from: Optional[str] = None) -> Dict[str, Any]:
  """Runs (or resumes) one experiment into `base_dir`. Returns the last metrics row.

  Args:
    base_dir: the run folder (local path or any tf.io.gfile URL, e.g. gs://).
    create_experiment: a callable `(seed=...) -> Experiment`, e.g. `@AtariExperiment` in gin.
    num_iterations: iterations in the whole run.
    gradient_steps_per_iteration: train steps per iteration (62,500 in the DQN Replay papers).
    seed: seeds data sampling, network init, exploration and evaluation environments.
    log_every_steps: a progress line (steps/s, ETA, losses) and a NaN check every this many steps.
    checkpoints_to_keep: how many iteration checkpoints stay on disk.
    tensorboard: write TensorBoard events.
    deterministic_ops: `tf.config.experimental.enable_op_determinism()`: bit-identical resumes on GPU/TPU,
      where some kernels are otherwise nondeterministic; CPU kernels used here are deterministic already.
    init_from: a run folder (or one of its checkpoints) whose weights start this run (`train --init_from`; the
      DR3 paper's Fig. 2: continue a DR3 run's Q-function without DR3). Only what `experiment.initial_weights()`
      names is copied (the Atari agent's online and target networks): the optimizer, counters and sampler start
      fresh. The source is recorded in run_info.json (`init_from`); a resume continues from this run's own
      checkpoints, and as a gin setting a changed init_from is refused like any other changed setting.
  """
  if log_every_steps < 1 or gradient_steps_per_iteration < 1 or num_iterations < 1:
    raise ConfigError(f"run_experiment: num_iterations={num_iterations}, gradient_steps_per_iteration="
                      f"{gradient_steps_per_iteration}, log_every_steps={log_every_steps}; expected each >= 1")
  _check_writable(base_dir)
  done_path = os.path.join(base_dir, DONE_FILE)
  if tf.io.gfile.exists(done_path):
    with tf.io.gfile.GFile(done_path) as f:
      done = json.loads(f.read())
    if done.get("iterations", 0) >= num_iterations:
      logging.info("Run in %s is already finished (%s); nothing to do.", base_dir, done)
      rows = MetricsLog(base_dir, tensorboard=False).rows
      return rows[-1] if rows else {}
    logging.info("Extending the finished run in %s from %d to %d iterations.", base_dir, done["iterations"],
                 num_iterations)
    tf.io.gfile.remove(done_path)
  checkpoint_dir = os.path.join(base_dir, CHECKPOINT_SUBDIR)
  _check_resume_config(base_dir, tf.train.latest_checkpoint(checkpoint_dir) is not None)
  if deterministic_ops:
    tf.config.experimental.enable_op_determinism()

  # Network initializers: tf-keras draws unseeded initializer seeds from Python's `random`, so seed Python,
  # NumPy and TF together. Every stream used after construction is a checkpointed tf.random.Generator.
  tf.keras.utils.set_random_seed(seed)
  experiment = create_experiment(seed=seed)

  iteration_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="iteration")
  checkpoint = tf.train.Checkpoint(iteration=iteration_var, **experiment.trackables())
  manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir, max_to_keep=checkpoints_to_keep)
  if manager.latest_checkpoint:
    try:
      checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    except (ValueError, AssertionError, tf.errors.OpError) as e:
      raise ConfigError(f"--base_dir={base_dir}: its checkpoint {manager.latest_checkpoint} does not fit this "
                        f"experiment ({first_line(e)}); use a new --base_dir") from None
    logging.info("Resumed from %s (iteration %d done).", manager.latest_checkpoint, int(iteration_var))
  source = None
  if init_from:
    if manager.latest_checkpoint:  # resumed: the weights came from init_from when the run started
      with tf.io.gfile.GFile(os.path.join(base_dir, RUN_INFO_FILE)) as f:
        source = json.loads(f.read()).get("init_from")
    else:
      source = _initialize_from(experiment, init_from)
  # Written after a successful restore, so a refused resume never relabels the folder.
  info = dict(experiment.run_info(), seed=seed, num_iterations=num_iterations,
              gradient_steps_per_iteration=gradient_steps_per_iteration)
  if source is not None:
    info["init_from"] = source
  _atomic_write(os.path.join(base_dir, RUN_INFO_FILE), json.dumps(info, indent=2, sort_keys=True) + "\n")
  if not manager.latest_checkpoint:
    _atomic_write(os.path.join(base_dir, CONFIG_FILE), gin.config_str())
  start = int(iteration_var)
  metrics_log = MetricsLog(base_dir, tensorboard=tensorboard)
  metrics_log.truncate(start)

  row: Dict[str, Any] = metrics_log.rows[-1] if metrics_log.rows else {}
  total_steps = num_iterations * gradient_steps_per_iteration
  for iteration in range(start, num_iterations):
    checkpoint_note = (f"Last good checkpoint: iteration {iteration} in {manager.directory}."
                       if iteration > 0 else "No checkpoint was written yet.")
    experiment.on_iteration_start(iteration)
    accumulator = _MeanAccumulator()
    t0 = time.time()
    for step in range(1, gradient_steps_per_iteration + 1):
      metrics = experiment.train_step()
      accumulator.add(metrics)
      if step % log_every_steps == 0 or step == gradient_steps_per_iteration:
        latest = {k: _to_float(v) for k, v in metrics.items()}
        global_step = iteration * gradient_steps_per_iteration + step
        _check_finite(latest, f"at gradient step {global_step} (iteration {iteration})", checkpoint_note)
        rate = step / max(time.time() - t0, 1e-9)
        eta = (total_steps - global_step) / rate
        shown = " ".join(f"{k}={latest[k]:.4g}" for k in sorted(latest)[:6])
        logging.info("iteration %d step %d/%d  %.1f steps/s  ETA %s  %s", iteration, step,
                     gradient_steps_per_iteration, rate, _format_duration(eta), shown)
    train_metrics = accumulator.means()
    _check_finite(train_metrics, f"in iteration {iteration}", checkpoint_note)
    train_seconds = time.time() - t0
    train_metrics.update(experiment.diagnostics(iteration))
    eval_metrics = experiment.evaluate(iteration)

    row = {"iteration": iteration, "gradient_steps": (iteration + 1) * gradient_steps_per_iteration}
    row.update({f"train/{k}": v for k, v in sorted(train_metrics.items())})
    row.update({f"eval/{k}": float(v) for k, v in sorted(eval_metrics.items())})
    row["time/train_steps_per_second"] = gradient_steps_per_iteration / max(train_seconds, 1e-9)
    metrics_log.append(row)
    iteration_var.assign(iteration + 1)
    manager.save(checkpoint_number=iteration + 1)
    if iteration == start:
      _atomic_write(os.path.join(base_dir, CONFIG_FILE), gin.operative_config_str())
    logging.info("iteration %d done: %s", iteration,
                 " ".join(f"{k}={v:.4g}" for k, v in row.items() if k.startswith("eval/")))

  _atomic_write(done_path, json.dumps({"iterations": num_iterations,
                                       "gradient_steps": total_steps}) + "\n")
  return row


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


def _format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
