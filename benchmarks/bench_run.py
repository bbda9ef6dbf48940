"""A user's run end to end: `python -m batch_rl_dr3.train` against its bare step, memory and start-up at 1 %.

Entries:
  run_steps_vs_step
      gradient steps/s of `python -m batch_rl_dr3.train` over whole iterations (train steps, progress logging,
      diagnostics, metrics rows, the checkpoint; evaluation off), each iteration shortened to G steps, over the
      steps/s of the same experiment's bare compiled step called in a Python loop. Side by side: after each
      iteration the run is paused (SIGSTOP; the paused time is subtracted) while a block of G bare steps is
      timed in this process. The first iteration (tracing) is not counted. Goal >= 0.95.
  step_vs_pure_compute_1pct
      the DQN step (default configuration, in-graph sampling) with the replay at the 1 % size (500,000 rows, 3.5
      GB of frames: every batch misses the caches) over the same network math on a batch already in memory.
      Goal <= 1.10.
  peak_rss_1pct_vs_frames
      peak RSS of a whole run at the 1 % setting (load + training + checkpoint) minus the fixed overhead, over
      the bytes of its frames (rows x 7,056). The fixed overhead is the peak RSS of the same run on a tiny
      dataset (20 rows per checkpoint, their frames subtracted: Python, TF, the agent, the traced step), measured
      in this run and given in `fixed_overhead_bytes`. Goal <= 1.15.
  peak_rss_5pct_resident_vs_frames
      the same at the 5 % setting with `num_resident_checkpoints` = K: frames of K checkpoints resident at a
      time, so the baseline is K x 50,000 rows x 7,056 bytes. Goal <= 1.15 (as above).
  first_step_seconds_gz, first_step_seconds_cached
      seconds from launching `python -m batch_rl_dr3.train` at 1 % to its first gradient step, reading the
      gzipped checkpoints, and reading them from the local cache (`load_dataset.cache_dir`, filled by a previous
      run). Baseline: the same launch on the tiny dataset (imports, graph building, tracing). Informational.
Sizes: --quick divides the rows by 10 (50,000 rows at "1 %"): it checks the plumbing, not the figures. The full
sizes need ~4 GB of RAM for a minute: run them alone, once.

The dataset is the synthetic Atari-like one of bench_data (it compresses like real frames), 50 checkpoints
written in the real DQN Replay format (one checkpoint's arrays, written once, copied under 50 suffixes).
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import spread  # noqa: E402
from batch_rl_dr3.data import dqn_replay  # noqa: E402

FRAME_BYTES = 84 * 84
NUM_CHECKPOINTS = 50
GAME = "Pong"
GIN_FILES = ["atari/dqn.gin"]
# Evaluation off (it has its own benchmark); everything else at its default.
COMMON = ["AtariExperiment.evaluation_steps = 0", "run_experiment.num_iterations = 1",
          "run_experiment.tensorboard = True"]
_ABSL_TIME = re.compile(r"^[IWEF]\d{4} (\d\d):(\d\d):(\d\d\.\d+)")


def _log(message):
  print(f"  {message}", flush=True)


def _write_dataset(root, rows_per_checkpoint):
  """50 checkpoints of `rows_per_checkpoint` rows each, as <root>/Pong/1/replay_logs."""
  from bench_data import _atari_like_checkpoint
  directory = dqn_replay.replay_logs_dir(root, GAME, 1)
  os.makedirs(directory, exist_ok=True)
  arrays = _atari_like_checkpoint(rows_per_checkpoint)
  arrays["action"] = arrays["action"] % 6  # Pong's minimal action set
  dqn_replay.save_checkpoint(directory, 0, arrays)
  for suffix in range(1, NUM_CHECKPOINTS):
    for name in os.listdir(directory):
      if name.endswith("_ckpt.0.gz"):
        shutil.copy(os.path.join(directory, name), os.path.join(directory, name.replace("_ckpt.0.gz",
                                                                                        f"_ckpt.{suffix}.gz")))
  return root


def _train_command(base_dir, data_root, bindings):
  command = [sys.executable, "-m", "batch_rl_dr3.train", f"--base_dir={base_dir}", f"--data_dir={data_root}",
             f"--game={GAME}", "--run=1", "--seed=0"]
  command += [f"--gin_files={f}" for f in GIN_FILES]
  return command + [f"--gin_bindings={b}" for b in COMMON + list(bindings)]


def _env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)


def _seconds_of_day(line):
  match = _ABSL_TIME.match(line)
  if not match:
    return None
  h, m, s = match.groups()
  return int(h) * 3600 + int(m) * 60 + float(s)


def run_and_measure(base_dir, data_root, bindings, first_step_marker=None):
  """Runs train to the end; returns (peak RSS bytes, seconds from launch to the line `first_step_marker`)."""
  started = time.time()
  proc = subprocess.Popen(_train_command(base_dir, data_root, bindings), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, cwd=ROOT, env=_env())
  first_step, tail = None, []
  for line in proc.stderr:
    tail = (tail + [line])[-30:]
    if first_step is None and first_step_marker and first_step_marker in line:
      first_step = time.time() - started
  _, status, usage = os.wait4(proc.pid, 0)
  proc.returncode = os.waitstatus_to_exitcode(status)
  if proc.returncode != 0:
    raise RuntimeError(f"train failed ({proc.returncode}):\n{''.join(tail)}")
  return usage.ru_maxrss * 1024, first_step


def memory_and_startup(work, quick):
  scale = 10 if quick else 1
  entries = []
  rows_1pct = 10_000 // scale  # 1 % of a 1M-row checkpoint
  tiny_root = _write_dataset(os.path.join(work, "tiny"), 200)
  one_root = _write_dataset(os.path.join(work, "one"), rows_1pct + 10)
  steps = ["run_experiment.gradient_steps_per_iteration = 20", "run_experiment.log_every_steps = 1"]
  marker = "train: 1/"  # the progress line of the first gradient step (log_every_steps = 1)

  def one_pct(rows):
    return ["load_dataset.setting = '1pct'", f"load_dataset.transitions_per_checkpoint = {rows}"]

  _log("peak RSS and time to the first step: tiny dataset (the fixed overhead) ...")
  tiny_rows = 20
  tiny_rss, tiny_first = run_and_measure(os.path.join(work, "run_tiny"), tiny_root, one_pct(tiny_rows) + steps,
                                         marker)
  tiny_rss -= NUM_CHECKPOINTS * tiny_rows * FRAME_BYTES  # its own frames are not overhead
  _log(f"1 % ({NUM_CHECKPOINTS} x {rows_1pct} rows) from gz ...")
  rss_1pct, first_gz = run_and_measure(os.path.join(work, "run_gz"), one_root, one_pct(rows_1pct) + steps, marker)
  cache = os.path.join(work, "cache")
  cached = one_pct(rows_1pct) + steps + [f"load_dataset.cache_dir = {cache!r}"]
  _log("1 % filling the cache, then from the cache ...")
  run_and_measure(os.path.join(work, "run_fill"), one_root, cached, marker)
  _, first_cached = run_and_measure(os.path.join(work, "run_cached"), one_root, cached, marker)
  frames = NUM_CHECKPOINTS * rows_1pct * FRAME_BYTES
  entries.append(spread.entry("peak_rss_1pct_vs_frames", [rss_1pct - tiny_rss], [frames], "bytes above the fixed "
                              "overhead / frame bytes", goal="<= 1.15", higher_is_better=False,
                              fixed_overhead_bytes=tiny_rss, peak_rss_bytes=rss_1pct, rows=NUM_CHECKPOINTS * rows_1pct))
  entries.append(spread.entry("first_step_seconds_gz", [first_gz], [tiny_first], "s to the first gradient step "
                              "(1 % from gz / tiny dataset)", goal="informational", higher_is_better=False))
  entries.append(spread.entry("first_step_seconds_cached", [first_cached], [tiny_first], "s to the first gradient "
                              "step (1 % from the cache / tiny dataset)", goal="informational",
                              higher_is_better=False))
  del one_root
  shutil.rmtree(os.path.join(work, "one"))
  shutil.rmtree(cache)

  rows_5pct, resident = 50_000 // scale, 5
  five_root = _write_dataset(os.path.join(work, "five"), rows_5pct + 10)
  _log(f"5 % ({NUM_CHECKPOINTS} x {rows_5pct} rows), {resident} checkpoints resident ...")
  rss_5pct, _ = run_and_measure(os.path.join(work, "run_5pct"), five_root,
                                ["load_dataset.setting = '5pct'", f"load_dataset.transitions_per_checkpoint = "
                                 f"{rows_5pct}", f"load_dataset.num_resident_checkpoints = {resident}"] + steps)
  entries.append(spread.entry("peak_rss_5pct_resident_vs_frames", [rss_5pct - tiny_rss],
                              [resident * rows_5pct * FRAME_BYTES], "bytes above the fixed overhead / resident "
                              "frame bytes", goal="<= 1.15", higher_is_better=False, fixed_overhead_bytes=tiny_rss,
                              peak_rss_bytes=rss_5pct, num_resident_checkpoints=resident))
  shutil.rmtree(os.path.join(work, "five"))
  for e in entries:
    _log(spread.describe(e))
  return entries


def run_vs_step(work, quick):
  """run_steps_vs_step: iterations of the real entry point, paused between them to time the bare step."""
  import batch_rl_dr3  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
  from batch_rl_dr3 import atari_experiment, train
  from tests.replay_fixtures import write_run
  rounds, steps = (3, 200) if quick else (4, 1000)
  data_root = os.path.join(work, "small")
  write_run(data_root, game=GAME, run=1, num_checkpoints=2, capacity=2000)
  bindings = ["load_dataset.setting = 'all'", f"run_experiment.gradient_steps_per_iteration = {steps}"]
  # The bare step: the same experiment, built here from the same config.
  train.parse_gin(GIN_FILES, train.flag_bindings(data_root, GAME, 1, 0, None) + COMMON + bindings)
  experiment = atari_experiment.AtariExperiment(seed=0)
  bare = experiment.train_step
  np.asarray(bare()["total_loss"])

  command = _train_command(os.path.join(work, "run_vs_step"), data_root,
                           bindings + [f"run_experiment.num_iterations = {rounds + 1}"])
  proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                          env=_env())
  run_rates, bare_rates, tail = [], [], []
  last_done, paused = None, 0.0
  try:
    for line in proc.stderr:
      tail = (tail + [line])[-30:]
      if " done" not in line or not re.search(r"iteration \d+ done", line):
        continue
      done_at = _seconds_of_day(line)
      if last_done is not None:
        run_rates.append(steps / (done_at - last_done - paused))
      last_done = done_at
      if len(run_rates) == rounds:
        break
      os.kill(proc.pid, signal.SIGSTOP)
      stop = time.time()
      start = time.perf_counter()
      for _ in range(steps):
        out = bare()
      np.asarray(out["total_loss"])
      bare_rates.append(steps / (time.perf_counter() - start))
      paused = time.time() - stop
      os.kill(proc.pid, signal.SIGCONT)
      if len(run_rates):
        _log(f"round {len(run_rates)}: run {run_rates[-1]:.1f} steps/s, bare step {bare_rates[-1]:.1f} steps/s")
  finally:
    if proc.poll() is None:
      os.kill(proc.pid, signal.SIGCONT)
    proc.wait(timeout=600)
  if proc.returncode != 0 or len(run_rates) != rounds:
    raise RuntimeError(f"train failed ({proc.returncode}):\n{''.join(tail)}")
  # Round r pairs iteration r + 1 with the bare block timed in the pause just before it.
  e = spread.entry("run_steps_vs_step", run_rates, bare_rates[:rounds], "gradient steps/s (whole iterations / "
                   "bare step)", goal=">= 0.95", gradient_steps_per_iteration=steps)
  _log(spread.describe(e))
  return [e]


def pure_compute_1pct(quick):
  """step_vs_pure_compute_1pct: the DQN step on a 500,000-row replay against its network math."""
  from batch_rl_dr3 import agents
  from batch_rl_dr3.data import fixed_replay
  from bench_agents import _pure_compute_fn, time_interleaved
  rows = 50_000 if quick else 500_000
  with tempfile.TemporaryDirectory() as work:
    root = _write_dataset(work, rows // NUM_CHECKPOINTS + 10)
    replay = fixed_replay.FixedReplay.from_checkpoints(
        dqn_replay.replay_logs_dir(root, GAME, 1), list(range(NUM_CHECKPOINTS)),
        transitions_per_checkpoint=rows // NUM_CHECKPOINTS)
  _log(f"replay of {replay.num_transitions} transitions, {replay.nbytes() / 2 ** 30:.2f} GiB")
  sampler = fixed_replay.InGraphSampler(replay, batch_size=32, seed=0)
  agent = agents.DQN(6, sampler)
  pure_agent = agents.DQN(6, sampler)
  times = time_interleaved({"step": agent.train_step,
                            "pure": _pure_compute_fn(pure_agent, sampler.sample(), False)},
                           steps=24 if quick else 120, warmup=2, rounds=6 if quick else 12)
  e = spread.entry("step_vs_pure_compute_1pct", times["step"] * 1e3, times["pure"] * 1e3, "ms/step",
                   goal="<= 1.10", higher_is_better=False, rows=int(replay.num_transitions))
  _log(spread.describe(e))
  return [e]


def run(quick: bool):
  entries = []
  with tempfile.TemporaryDirectory() as work:
    # The children's peak RSS first, while this process is small; the 1 % replay in this process last.
    entries += memory_and_startup(work, quick)
    entries += run_vs_step(work, quick)
  entries += pure_compute_1pct(quick)
  return entries


if __name__ == "__main__":
  for item in run(quick="--quick" in sys.argv):
    print(item)
