"""Data-layer benchmarks: sampling throughput against Dopamine, cached vs gzip loads, memory, scaling.

Entries (ratio = the figure of merit, value and baseline measured side by side in this run; each ratio is the
median of the per-round ratios, `spread` gives min / median / max over the rounds):
  sampler_vs_dopamine          our in-graph batches/s over Dopamine's `sample_transition_batch` batches/s (B=32),
                               on the default CPU path (graph mode, no XLA: OfflineAgent.jit_compile = False)
                               as training runs it: inside a compiled computation, 8 batches per call, no
                               Python between them (the train step never dispatches a sample on its own)
  sampler_vs_dopamine_xla      the same inside an XLA computation (jit_compile = True: GPU/TPU)
  sampler_per_call_vs_dopamine the XLA sampler called alone from Python once per batch (informational: adds a
                               function dispatch per batch that training does not pay)
  graph_sampler_per_call_vs_dopamine  the same for graph mode (informational)
  tfdata_sampler_vs_dopamine   our tf.data batches/s over Dopamine's batches/s (B=32)
  cached_vs_gz_load            seconds to load a checkpoint from .gz over seconds from the local cache
  bytes_per_transition_vs_raw  bytes held per stored transition over 7,056 (one 84x84 frame)
  sampler_scaling_10x          seconds per in-graph batch (XLA) with 10x the data over seconds with 1x
  cached_load_vs_copy_floor    cached load seconds over the seconds of one numpy copy of the same frames into
                               fresh memory (the floor of any load; informational)
Goals: sampler >= 10, cached load >= 10, bytes <= 1.1, scaling <= 1.1 (the others are informational).

The dataset is synthetic but Atari-like (flat backgrounds, moving sprites: it compresses like real frames),
written in the real DQN Replay format, episodes padded as Dopamine does.
"""
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from batch_rl_dr3.data import dqn_replay  # noqa: E402
from batch_rl_dr3.data import fixed_replay  # noqa: E402
from batch_rl_dr3.data.replay_cache import ReplayCache  # noqa: E402
import spread  # noqa: E402

RAW_BYTES = 84 * 84


def _log(message):
  print(f"   [data] {message}", flush=True)


def _atari_like_checkpoint(rows, seed=0):
  """Arrays of one logged checkpoint (add_count = rows - 1, like the logger writes) with padded episodes."""
  rng = np.random.default_rng(seed)
  observation = np.zeros((rows, 84, 84), np.uint8)
  terminal = np.zeros(rows, np.uint8)
  background = np.kron(rng.integers(0, 4, (6, 6)) * 40, np.ones((14, 14), np.int64)).astype(np.uint8)
  row = 0
  while row < rows:
    row += 3  # Dopamine's zero padding before an episode
    length = int(rng.integers(200, 2000))
    end = min(rows, row + length)
    steps = np.arange(end - row)
    observation[row:end] = background
    for sprite in range(3):  # sprites moving across the screen
      y = (10 + 25 * sprite + steps // 7) % 76
      x = (steps * (sprite + 1)) % 76
      for k in range(len(steps)):
        observation[row + k, y[k]:y[k] + 8, x[k]:x[k] + 8] = 200 + 20 * sprite
    if end - row == length:
      terminal[end - 1] = 1
    row = end
  return {"observation": observation, "action": rng.integers(0, 18, rows).astype(np.int32),
          "reward": rng.choice([-1.0, 0.0, 0.0, 0.0, 1.0], rows).astype(np.float32), "terminal": terminal,
          "add_count": np.array(rows - 1, np.int64), "invalid_range": dqn_replay.invalid_range(rows - 1, rows, 4, 1)}


BATCHES_PER_CALL = 8


def _in_graph(sampler, jit_compile=True):
  """`BATCHES_PER_CALL` batches from one compiled call, all returned (none can be optimized away)."""
  return tf.function(lambda: [sampler.sample() for _ in range(BATCHES_PER_CALL)], jit_compile=jit_compile)


def _time_side_by_side(functions, rounds, calls):
  """Seconds per call of each function in each round ({name: array of per-round seconds}): rounds alternate
  between them, so load from other processes on this shared machine hits them alike."""
  for fn in functions.values():
    fn()  # warm up (tracing, compilation, first touch)
  samples = {name: [] for name in functions}
  for _ in range(rounds):
    for name, fn in functions.items():
      started = time.perf_counter()
      for _ in range(calls):
        fn()
      samples[name].append((time.perf_counter() - started) / calls)
  return {name: np.asarray(v) for name, v in samples.items()}


def _rate_entry(name, seconds, baseline_seconds, goal):
  return spread.entry(name, 1 / seconds, 1 / baseline_seconds, "batches/s", goal=goal)


def _entry(name, value, unit, baseline, ratio, goal):
  return {"name": name, "value": float(value), "unit": unit, "baseline": float(baseline), "ratio": float(ratio),
          "goal": goal}


def run(quick: bool):
  from dopamine.tf.replay_memory import circular_replay_buffer

  rows = 20_000 if quick else 100_000
  work = tempfile.mkdtemp(prefix="bench_data_")
  results = []
  try:
    _log(f"writing a {rows}-row checkpoint in the DQN Replay format")
    directory = os.path.join(work, "replay_logs")
    dqn_replay.save_checkpoint(directory, 0, _atari_like_checkpoint(rows))

    # Sampling: Dopamine's buffer over the same file against ours.
    dopamine = circular_replay_buffer.OutOfGraphReplayBuffer(
        observation_shape=(84, 84), stack_size=4, replay_capacity=rows, batch_size=32)
    dopamine.load(directory, 0)
    replay = fixed_replay.FixedReplay.from_checkpoints(directory, [0])
    # Each path with the frame unpacking that is fastest for it (see fixed_replay.FRAME_UNPACKING).
    sampler = fixed_replay.InGraphSampler(replay, batch_size=32, seed=0, frame_unpacking="swar")
    graph_sampler = fixed_replay.InGraphSampler(replay, batch_size=32, seed=0)
    graph_in_graph_sampler = fixed_replay.InGraphSampler(replay, batch_size=32, seed=0)
    iterator = iter(fixed_replay.make_tf_dataset(replay, 32, seed=0))
    # Small prefix of the same data for the scaling figure.
    small = fixed_replay.FixedReplay.from_checkpoints(directory, [0], transitions_per_checkpoint=rows // 10)
    rounds, calls = (30, 10) if quick else (60, 20)
    _log(f"timing samplers: {rounds} alternating rounds of {calls} batches")
    small_sampler = fixed_replay.InGraphSampler(small, batch_size=32, seed=0, frame_unpacking="swar")
    times = _time_side_by_side({
        "dopamine": lambda: dopamine.sample_transition_batch(32),
        # As in training: the sample is part of a compiled computation.
        "xla": _in_graph(sampler),
        "graph": _in_graph(graph_in_graph_sampler, jit_compile=False),
        "xla_per_call": tf.function(sampler.sample, jit_compile=True),
        "graph_per_call": tf.function(graph_sampler.sample),
        "tfdata": lambda: next(iterator),
        "xla_small": _in_graph(small_sampler),
    }, rounds, calls)
    for name in ("xla", "graph", "xla_small"):
      times[name] /= BATCHES_PER_CALL
    for name, value in times.items():
      _log(f"  {name}: {np.median(value) * 1e3:.3f} ms per batch of 32 (min {value.min() * 1e3:.3f}, "
           f"max {value.max() * 1e3:.3f})")
    dopamine_s = times["dopamine"]
    results.append(_rate_entry("sampler_vs_dopamine", times["graph"], dopamine_s, ">= 10"))
    results.append(_rate_entry("sampler_vs_dopamine_xla", times["xla"], dopamine_s, ">= 10"))
    results.append(_rate_entry("sampler_per_call_vs_dopamine", times["xla_per_call"], dopamine_s, "informational"))
    results.append(_rate_entry("graph_sampler_per_call_vs_dopamine", times["graph_per_call"], dopamine_s,
                               "informational"))
    results.append(_rate_entry("tfdata_sampler_vs_dopamine", times["tfdata"], dopamine_s, "informational"))
    results.append(spread.entry("sampler_scaling_10x", times["xla"], times["xla_small"], "s/batch", goal="<= 1.1",
                                higher_is_better=False))

    per_row = replay.nbytes() / replay.num_rows
    results.append(_entry("bytes_per_transition_vs_raw", per_row, "bytes", RAW_BYTES, per_row / RAW_BYTES, "<= 1.1"))
    _log(f"bytes per stored transition: {per_row:.0f}")

    del dopamine, replay, sampler, graph_sampler, graph_in_graph_sampler, small, small_sampler, iterator

    # Loading: gzip against the local cache (the first cached load writes the entry).
    cache_dir = os.path.join(work, "cache")
    fixed_replay.FixedReplay.from_checkpoints(directory, [0], cache_dir=cache_dir)
    gz_times, cached_times, copy_times = [], [], []
    cached_frames = ReplayCache(cache_dir).lookup(directory, 0, f"prefix:{None}")["observation"]
    for _ in range(4 if quick else 8):
      started = time.perf_counter()
      fixed_replay.FixedReplay.from_checkpoints(directory, [0])
      gz_times.append(time.perf_counter() - started)
      started = time.perf_counter()
      hit = fixed_replay.FixedReplay.from_checkpoints(directory, [0], cache_dir=cache_dir)
      cached_times.append(time.perf_counter() - started)
      assert hit.cache_hits == 1
      del hit
      # The floor of any load into fresh memory: one copy of the cached frames (the kernel zero-fills each new
      # page first).
      started = time.perf_counter()
      np.array(cached_frames)
      copy_times.append(time.perf_counter() - started)
    gz_s, cached_s, copy_s = np.median(gz_times), np.median(cached_times), np.median(copy_times)
    _log(f"load {rows} rows: {gz_s:.2f} s from .gz, {cached_s:.3f} s from the cache, {copy_s:.3f} s for one "
         f"copy of the frames (medians)")
    # Ratio = gz time / cached time (higher is better): as rates, 1 / seconds.
    results.append(spread.entry("cached_vs_gz_load", 1 / np.asarray(cached_times), 1 / np.asarray(gz_times),
                                "loads/s", goal=">= 10"))
    results.append(spread.entry("cached_load_vs_copy_floor", cached_times, copy_times, "s", higher_is_better=False,
                                goal="informational (1 = a single memcpy of the frames)"))
  finally:
    shutil.rmtree(work, ignore_errors=True)
  return results


if __name__ == "__main__":
  for entry in run("--quick" in sys.argv):
    print(entry)
