"""Fixed replay: DQN Replay checkpoints held in memory with Dopamine's transition semantics, and two samplers.

`FixedReplay` stores every loaded frame once (one 84x84 frame per stored transition, 7,056 bytes held as 1,764
int32 words, in a `tf.Variable` shared by the samplers; never stacked copies) and precomputes, per valid transition, what a batch needs: the frame rows of the
state and next-state stacks, the n-step reward and discount, the next action and the Monte-Carlo return.
Sampling is then a pure gather.

Which transitions are valid (what Dopamine's `sample_index_batch` could return):

* A whole checkpoint (N stored rows) behaves exactly as Dopamine's `OutOfGraphReplayBuffer(replay_capacity=N)`
  after `.load`: the sampling range around the cursor (``add_count % N``), the file's `invalid_range`, no
  terminal in the first ``stack_size - 1`` frames of the stack, circular wrap-around when the buffer is full.
  `episode_end_indices` (newer Dopamine, a pickle, absent from the DQN Replay data) is not read: episode ends
  are the terminal flags, as when the dataset was logged.
* A prefix of k < N rows (the 1 % / 5 % settings keep the first 10k / 50k rows) keeps the transitions that are
  valid in the whole checkpoint AND read only rows of the prefix without wrapping: index i with
  ``stack_size - 1 <= i`` and ``i + update_horizon <= k - 1``. Each kept transition is therefore identical to
  the whole checkpoint's transition at that index (never a frame past the prefix, never a stack glued across the
  cut). Dopamine-labs / batch_rl instead load the prefix into a buffer of ``replay_capacity = k``: with the
  logged ``add_count = (c + 1) * 1M - 1`` its cursor is k - 1, so they drop the one last index ``k - n - 1``
  that we keep; with other add_counts their wrap-around can glue rows across the cut, which we never do.
* `return_to_go` is the discounted sum of rewards from the state to the end of its episode, as far as the
  loaded rows go: an episode cut by the end of the loaded rows (checkpoint end, prefix end, or the cursor
  where the logger overwrote older data) gets the sum of its loaded rewards, without bootstrapping.

Samplers (both uniform over all valid transitions of the resident data, i.i.d. with replacement):

* `InGraphSampler`: a `tf.Module` whose `sample()` is built from TF ops only (works in plain and XLA-compiled
  `tf.function`s); its `tf.random.Generator` is checkpointed with it, so a resumed run draws the same batches.
* `make_tf_dataset`: a `tf.data.Dataset` of batches, reproducible from its seed.

batch_rl's `FixedReplayBuffer` instead picks one resident checkpoint per batch and samples the whole batch
from it: every checkpoint gets the same share of batches whatever its number of valid transitions, and the
transitions of one batch are correlated. Ours draw each transition independently.

Memory-bounded mode (`num_resident_checkpoints=K`, as batch_rl's `reload_buffer(num_buffers=5)`): only K
checkpoints are resident; `on_iteration_start(iteration)` swaps in K others chosen from (seed, iteration) so a
resumed run reloads the same ones. Storage is allocated once at the largest size K checkpoints can take, with a
count of valid transitions, so a compiled train step never retraces. With `cache_dir`, swaps read the
uncompressed cache instead of gunzipping again.

The storage lives on TF's default device; for data larger than accelerator memory pass
`storage_device='/CPU:0'` and feed batches with `make_tf_dataset`.
"""
import concurrent.futures
import contextlib
import json
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

from absl import logging
import gin
import numpy as np
import scipy.signal
import tensorflow as tf

from batch_rl_dr3.data import dqn_replay
from batch_rl_dr3.data.replay_cache import ReplayCache
from batch_rl_dr3.errors import ConfigError, DataError

SUBSETS = ("prefix", "episodes")
_CHUNK_ROWS = 8192
# Frames go into the frame variable 1,024 rows (7 MB) at a time: the scatter's staging copy then stays in the
# CPU cache, which made a cached load ~2x faster than 8,192-row scatters (bench_data, cached_vs_gz_load).
_COPY_ROWS = 1024
_LITTLE_ENDIAN = sys.byteorder == "little"
_MAX_LOAD_THREADS = 8


# ----------------------------------------------------------------------------------------------------------
# Per-checkpoint precomputation (numpy)


def discounted_returns(rewards: np.ndarray, stops: np.ndarray, gamma: float) -> np.ndarray:
  """G[i] = r[i] + gamma * G[i+1], restarting after every row where `stops` is set (and at the end)."""
  rewards = np.asarray(rewards, np.float64)
  out = np.empty_like(rewards)
  ends = np.flatnonzero(stops[:-1]) + 1
  bounds = np.concatenate([[0], ends, [len(rewards)]])
  for start, end in zip(bounds[:-1], bounds[1:]):
    if end > start:
      out[start:end] = scipy.signal.lfilter([1.0], [1.0, -gamma], rewards[start:end][::-1])[::-1]
  return out


def _valid_and_transitions(small: Dict[str, np.ndarray], capacity: int, stack_size: int, update_horizon: int,
                           gamma: float) -> Dict[str, np.ndarray]:
  """Valid indices of one checkpoint slice and their transition fields (row numbers local to the slice).

  `small` holds the slice's action/reward/terminal (L rows), add_count and invalid_range; `capacity` is the
  stored rows N of the checkpoint the slice comes from (L == N: whole checkpoint, L < N: prefix).
  """
  action, reward, terminal = small["action"], small["reward"], small["terminal"].astype(bool)
  rows = len(action)
  add_count = int(small["add_count"])
  n, s = update_horizon, stack_size
  is_full = add_count >= capacity
  cursor = add_count % capacity
  index = np.arange(rows, dtype=np.int64)
  if is_full:
    span = capacity - s + 1 - n
    valid = ((index - (cursor - capacity + s - 1)) % capacity) < span
  else:
    valid = (index >= s - 1) & (index < cursor - n)
  valid &= ~np.isin(index, np.asarray(small["invalid_range"], np.int64))
  if rows < capacity:  # a prefix: no wrap-around, nothing read past its last row
    valid &= (index >= s - 1) & (index + n <= rows - 1)
  for j in range(s - 1):
    valid &= ~terminal[(index - s + 1 + j) % rows]
  idx = np.flatnonzero(valid)

  steps = np.arange(n)
  trajectory = (idx[:, None] + steps) % rows
  trajectory_terminals = terminal[trajectory]
  is_terminal = trajectory_terminals.any(axis=1)
  length = np.where(is_terminal, np.argmax(trajectory_terminals, axis=1) + 1, n)
  discount_vector = np.array([gamma ** k for k in range(n)], np.float32)
  in_trajectory = steps[None, :] < length[:, None]
  n_step_reward = np.sum(np.where(in_trajectory, discount_vector * reward[trajectory], np.float32(0)),
                         axis=1, dtype=np.float32)
  next_index = (idx + length) % rows
  offsets = np.arange(s) - s + 1
  state_rows = (idx[:, None] + offsets) % rows
  next_rows = (next_index[:, None] + offsets) % rows

  # Return to go, in the order the rows were written: a full whole checkpoint starts at its cursor (oldest).
  stops = terminal.copy()
  if is_full and rows == capacity:
    order = np.roll(np.arange(rows), -cursor)
  else:
    order = np.arange(rows)
    if 0 < cursor <= rows:  # the newest row: what follows it was overwritten or never written
      stops[cursor - 1] = True
  returns = np.empty(rows, np.float64)
  returns[order] = discounted_returns(reward[order], stops[order], gamma)

  return {
      "index": idx.astype(np.int32),
      "state_rows": state_rows.astype(np.int32),
      "next_rows": next_rows.astype(np.int32),
      "action": action[idx].astype(np.int32),
      "next_action": action[next_index].astype(np.int32),
      "reward": n_step_reward,
      "terminal": is_terminal.astype(np.float32),
      "discount": np.where(is_terminal, 0.0, gamma ** n).astype(np.float32),
      "return_to_go": returns[idx].astype(np.float32),
  }


_FRAME_WORDS = 84 * 84 // 4  # frames are stored as int32 words of 4 pixels: gathers move 4x fewer elements


def _as_words(frames: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(frames, np.uint8).reshape(len(frames), _FRAME_WORDS * 4).view(np.int32)


def _signed(mask: int) -> np.int32:
  return np.array(mask, np.uint32).view(np.int32)


_LOW_BYTES, _HIGH_BYTES, _LOW_HALF, _HIGH_HALF = (_signed(m) for m in (0x00FF00FF, 0xFF00FF00, 0x0000FFFF,
                                                                        0xFFFF0000))


# How gathered frame words become [B, 84, 84, stack] bytes. Measured on a 2-core CPU, batch 32: inside an XLA
# function the SWAR byte shuffle takes ~0.4 ms and a uint8 transpose ~1.7 ms; in graph mode (and in tf.data) it
# is the other way round, ~3.7 ms against ~1.9 ms. The default follows the CPU default of the train step
# (graph mode); use 'swar' together with `OfflineAgent.jit_compile = True`.
FRAME_UNPACKING = ("transpose", "swar")


def _stack_frames(gathered: tf.Tensor, unpacking: str = "transpose") -> tf.Tensor:
  """[B, 84, 84, stack] uint8 from gathered frame words [B, stack, 1764] int32 (oldest frame first)."""
  batch = tf.shape(gathered)[0]
  if unpacking == "transpose" or gathered.shape[1] != 4 or not _LITTLE_ENDIAN:
    pixels = tf.reshape(tf.bitcast(gathered, tf.uint8), [batch, -1, 84, 84])
    return tf.transpose(pixels, [0, 2, 3, 1])
  # A 4x4 byte transpose of each group of words (frame j, pixels 4k..4k+3) -> (pixel k, frames 0..3), with
  # masks and shifts (SWAR): a uint8 transpose or gather is many times slower on CPU, in XLA or not.
  shift = tf.bitwise.right_shift
  w0, w1, w2, w3 = gathered[:, 0], gathered[:, 1], gathered[:, 2], gathered[:, 3]
  t0 = (w0 & _LOW_BYTES) | tf.bitwise.left_shift(w1 & _LOW_BYTES, 8)
  t1 = (shift(w0, 8) & _LOW_BYTES) | (w1 & _HIGH_BYTES)
  t2 = (w2 & _LOW_BYTES) | tf.bitwise.left_shift(w3 & _LOW_BYTES, 8)
  t3 = (shift(w2, 8) & _LOW_BYTES) | (w3 & _HIGH_BYTES)
  o0 = (t0 & _LOW_HALF) | tf.bitwise.left_shift(t2, 16)
  o1 = (t1 & _LOW_HALF) | tf.bitwise.left_shift(t3, 16)
  o2 = (shift(t0, 16) & _LOW_HALF) | (t2 & _HIGH_HALF)
  o3 = (shift(t1, 16) & _LOW_HALF) | (t3 & _HIGH_HALF)
  pixels = tf.bitcast(tf.stack([o0, o1, o2, o3], axis=-1), tf.uint8)  # [B, 1764, 4 pixels, 4 frames]
  return tf.reshape(pixels, [batch, 84, 84, 4])


# Layout of the packed per-transition tables (one gather each when sampling).
def _int_columns(stack_size: int) -> Dict[str, slice]:
  s = stack_size
  return {"state_rows": slice(0, s), "next_rows": slice(s, 2 * s), "action": slice(2 * s, 2 * s + 1),
          "next_action": slice(2 * s + 1, 2 * s + 2), "index": slice(2 * s + 2, 2 * s + 3),
          "position": slice(2 * s + 3, 2 * s + 4)}


_FLOAT_COLUMNS = ("reward", "terminal", "discount", "return_to_go")


# ----------------------------------------------------------------------------------------------------------
# Reading one checkpoint slice (gz or cache)


class _CheckpointSlice:
  """The rows of one checkpoint that a dataset keeps: small arrays, frames (array or chunk stream), N."""

  def __init__(self, small: Dict[str, np.ndarray], capacity: int, frames=None, frame_chunks=None,
               cache_hit: bool = False):
    self.small = small
    self.capacity = capacity
    self.rows = len(small["action"])
    self._frames = frames
    self._frame_chunks = frame_chunks
    self.cache_hit = cache_hit

  def frame_chunks(self):
    if self._frames is not None:
      for start in range(0, self.rows, _CHUNK_ROWS):
        yield np.asarray(self._frames[start:start + _CHUNK_ROWS])
    else:
      yield from self._frame_chunks()


def _episode_rows(small: Dict[str, np.ndarray], capacity: int, budget: int, stack_size: int,
                  rng: np.random.Generator) -> np.ndarray:
  """Storage rows of randomly chosen whole episodes (each with its padding rows), in the order written."""
  terminal = small["terminal"].astype(bool)
  add_count = int(small["add_count"])
  is_full = add_count >= capacity
  cursor = add_count % capacity
  order = np.roll(np.arange(capacity), -cursor) if is_full else np.arange(cursor)
  ends = np.flatnonzero(terminal[order])
  # An episode unit runs from just after the previous terminal (its padding rows) to its own terminal. In a
  # full buffer the rows before the first terminal are the tail of an overwritten episode: dropped.
  starts = np.concatenate([[0], ends[:-1] + 1]) if not is_full else ends[:-1] + 1
  units = list(zip(starts, ends[1:] if is_full else ends))
  units = [(a, b) for a, b in units if b - a + 1 > stack_size - 1]
  if not units:
    return np.zeros(0, np.int64)
  chosen, total = [], 0
  for u in rng.permutation(len(units)):
    a, b = units[u]
    real = (b - a + 1) - (stack_size - 1)
    if chosen and total + real > budget:
      break
    chosen.append((a, b))
    total += real
  chosen.sort()
  return np.concatenate([order[a:b + 1] for a, b in chosen])


def _read_rows(directory: str, suffix: int, rows: np.ndarray):
  """Chunks of the observation rows `rows` (storage indices in any order; -1 = a zero padding frame)."""
  wanted_order = np.argsort(rows, kind="stable")
  sorted_rows = rows[wanted_order]
  first = np.searchsorted(sorted_rows, 0)  # the -1 entries sort first and stay zero
  out = np.zeros((len(rows),) + dqn_replay.OBSERVATION_SHAPE, np.uint8)
  start = 0
  needed = int(sorted_rows[-1]) + 1 if len(rows) and sorted_rows[-1] >= 0 else 0
  for chunk in dqn_replay.iter_observation_chunks(directory, suffix, needed):
    lo = max(first, np.searchsorted(sorted_rows, start))
    hi = np.searchsorted(sorted_rows, start + len(chunk))
    out[wanted_order[lo:hi]] = chunk[sorted_rows[lo:hi] - start]
    start += len(chunk)
  for i in range(0, len(out), _CHUNK_ROWS):
    yield out[i:i + _CHUNK_ROWS]


def _load_slice(directory: str, suffix: int, transitions: Optional[int], subset: str, seed: int,
                cache: Optional[ReplayCache], stack_size: int, update_horizon: int) -> _CheckpointSlice:
  if subset == "prefix":
    slice_spec = f"prefix:{transitions}"
  else:
    slice_spec = f"episodes:{transitions}:seed{seed}:stack{stack_size}:n{update_horizon}"
  if cache is not None:
    hit = cache.lookup(directory, suffix, slice_spec)
    if hit is not None:
      return _CheckpointSlice(hit, int(hit["num_rows"]), frames=hit["observation"], cache_hit=True)

  if subset == "prefix":
    small = dqn_replay.load_small_arrays(directory, suffix, transitions)
    capacity = int(small["num_rows"])
    rows = len(small["action"])
    chunks = lambda: dqn_replay.iter_observation_chunks(directory, suffix, rows, _CHUNK_ROWS)  # noqa: E731
  else:
    full = dqn_replay.load_small_arrays(directory, suffix, None)
    file_rows = int(full["num_rows"])
    budget = transitions if transitions is not None else file_rows
    rng = np.random.default_rng([seed, suffix])
    rows = _episode_rows(full, file_rows, budget, stack_size, rng)
    # The chosen episodes, concatenated, read as a not-full buffer that holds exactly them. Zero rows at the
    # end (what Dopamine pads before a next episode) keep the last episode's final transitions valid.
    rows = np.concatenate([rows, np.full(max(stack_size - 1, update_horizon), -1)])
    capacity = len(rows) + 1
    padding = rows < 0
    small = {name: np.where(padding, 0, full[name][np.maximum(rows, 0)]).astype(full[name].dtype)
             for name in ("action", "reward", "terminal")}
    small.update({"add_count": np.array(len(rows), np.int64),
                  "invalid_range": dqn_replay.invalid_range(len(rows), capacity, stack_size, update_horizon),
                  "num_rows": np.array(capacity, np.int64)})
    chunks = lambda: _read_rows(directory, suffix, rows)  # noqa: E731
  if cache is not None:
    stored = cache.store(directory, suffix, slice_spec, small, chunks())
    return _CheckpointSlice(stored, capacity, frames=stored["observation"])
  return _CheckpointSlice(small, capacity, frame_chunks=chunks)


# ----------------------------------------------------------------------------------------------------------
# The replay


class FixedReplay:
  """Loaded DQN Replay checkpoints: frames in one `tf.Variable`, per-transition tables, Dopamine semantics.

  Positions number the selected checkpoints in the order given (`checkpoints[position] = (suffix, kept)`).
  """

  def __init__(self, directory: str, checkpoints: Sequence[Tuple[int, Optional[int]]], *, stack_size: int = 4,
               update_horizon: int = 1, gamma: float = 0.99, subset: str = "prefix", seed: int = 0,
               cache_dir: Optional[str] = None, num_resident_checkpoints: Optional[int] = None,
               storage_device: Optional[str] = None, setting: Optional[str] = None):
    if subset not in SUBSETS:
      raise ConfigError(f"load_dataset.subset={subset!r}; expected one of {SUBSETS}")
    if stack_size < 1 or update_horizon < 1:
      raise ConfigError(f"stack_size={stack_size}, update_horizon={update_horizon}; expected both >= 1")
    if not checkpoints:
      raise ConfigError("no checkpoint selected; expected at least one (suffix, transitions) pair")
    self.directory = directory
    self.checkpoints = [(int(s), None if k is None else int(k)) for s, k in checkpoints]
    self.stack_size, self.update_horizon, self.gamma = stack_size, update_horizon, float(gamma)
    self.subset, self.seed, self.setting = subset, seed, setting
    self._cache = ReplayCache(cache_dir) if cache_dir else None
    self._device = storage_device
    count = len(self.checkpoints)
    if num_resident_checkpoints is not None and num_resident_checkpoints < 1:
      raise ConfigError(f"load_dataset.num_resident_checkpoints={num_resident_checkpoints}; expected >= 1 or None")
    self.num_resident = count if num_resident_checkpoints is None else min(num_resident_checkpoints, count)
    self.memory_bounded = self.num_resident < count
    self._lock = threading.Lock()
    self.resident_positions: List[int] = []
    self.resident_iteration: Optional[int] = None
    self.version = 0  # bumped whenever the resident data changes
    self.load_seconds = 0.0
    self.cache_hits = 0

    if self.memory_bounded:
      row_counts = sorted(self._planned_rows(p) for p in range(count))
      row_capacity = sum(row_counts[-self.num_resident:])
      self._allocate(row_capacity, row_capacity)
      self._make_resident(self._positions_for_iteration(0))
      self.resident_iteration = 0
    else:
      slices = self._load_slices(list(range(count)))
      rows = sum(sl.rows for sl in slices)
      self._allocate(rows, rows)
      self._install(list(range(count)), slices)

  # -- construction ----------------------------------------------------------------------------------------

  @classmethod
  def from_checkpoints(cls, directory: str, suffixes: Sequence[int], *,
                       transitions_per_checkpoint: Optional[int] = None, stack_size: int = 4,
                       update_horizon: int = 1, gamma: float = 0.99, **kwargs) -> "FixedReplay":
    """Loads checkpoints `suffixes` of `directory` (whole, or their first `transitions_per_checkpoint` rows).

    Keyword-only extras: subset ('prefix' | 'episodes'), seed, cache_dir, num_resident_checkpoints,
    storage_device, setting.
    """
    return cls(directory, [(s, transitions_per_checkpoint) for s in suffixes], stack_size=stack_size,
               update_horizon=update_horizon, gamma=gamma, **kwargs)

  def _planned_rows(self, position: int) -> int:
    suffix, kept = self.checkpoints[position]
    if self.subset == "prefix":
      file_rows = dqn_replay.read_num_rows(self.directory, suffix)
      return file_rows if kept is None else min(kept, file_rows)
    return self._load_slice(position).rows  # episodes: the choice needs the terminal flags

  def _device_scope(self):
    return tf.device(self._device) if self._device else contextlib.nullcontext()

  def _allocate(self, row_capacity: int, transition_capacity: int) -> None:
    s = self.stack_size
    with self._device_scope(), tf.init_scope():
      # Uninitialized: every row a transition reads is written before it is sampled, and a zero fill would be
      # one more pass over gigabytes.
      self.frames = tf.Variable(tf.raw_ops.Empty(shape=[max(row_capacity, 1), _FRAME_WORDS], dtype=tf.int32,
                                                 init=False),
                                trainable=False, name="replay_frames")
      self.int_table = tf.Variable(tf.zeros([max(transition_capacity, 1), 2 * s + 4], tf.int32),
                                   trainable=False, name="replay_int_table")
      self.float_table = tf.Variable(tf.zeros([max(transition_capacity, 1), len(_FLOAT_COLUMNS)], tf.float32),
                                     trainable=False, name="replay_float_table")
      self.count = tf.Variable(0, dtype=tf.int32, trainable=False, name="replay_count")
    self.row_capacity = row_capacity
    self.transition_capacity = transition_capacity

  def _load_slice(self, position: int) -> _CheckpointSlice:
    suffix, kept = self.checkpoints[position]
    return _load_slice(self.directory, suffix, kept, self.subset, self.seed, self._cache, self.stack_size,
                       self.update_horizon)

  def _load_slices(self, positions: List[int]) -> List[_CheckpointSlice]:
    """Small arrays of each checkpoint (frames stay streams or memory maps until installed)."""
    started = time.time()
    workers = max(1, min(_MAX_LOAD_THREADS, len(positions)))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      slices = list(pool.map(self._load_slice, positions))
    self.load_seconds += time.time() - started
    return slices

  def _install(self, positions: List[int], slices: List[_CheckpointSlice]) -> None:
    """Streams the slices' frames into the frame variable and builds the transition tables."""
    started = time.time()
    tables = []
    offsets, row = [], 0
    for position, sl in zip(positions, slices):
      tables.append(_valid_and_transitions(sl.small, sl.capacity, self.stack_size, self.update_horizon,
                                           self.gamma))
      offsets.append(row)
      row += sl.rows
    if row > self.row_capacity:
      raise DataError(f"checkpoints {positions} need {row} rows but the storage holds {self.row_capacity}")

    done = [0]
    total_rows = row

    def copy_frames(args):
      offset, sl, position = args
      at = offset
      for chunk in sl.frame_chunks():
        for start in range(0, len(chunk), _COPY_ROWS):
          # A scatter of whole rows: strided-slice assignment is orders of magnitude slower on CPU.
          rows = chunk[start:start + _COPY_ROWS]
          self.frames.scatter_update(tf.IndexedSlices(_as_words(rows), tf.range(at, at + len(rows))))
          at += len(rows)
        with self._lock:
          done[0] += len(chunk)
      if at - offset != sl.rows:
        raise DataError(f"checkpoint {self.checkpoints[position][0]}: {at - offset} frames for {sl.rows} rows")
      logging.info("fixed replay: checkpoint %d loaded (%d rows%s), %d/%d rows so far",
                   self.checkpoints[position][0], sl.rows, ", cache hit" if sl.cache_hit else "", done[0],
                   total_rows)

    workers = max(1, min(_MAX_LOAD_THREADS, len(positions)))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      list(pool.map(copy_frames, zip(offsets, slices, positions)))

    columns = _int_columns(self.stack_size)
    int_parts, float_parts = [], []
    self._ranges: Dict[int, Tuple[int, int]] = {}
    self._row_offsets: Dict[int, int] = {}
    self._valid: Dict[int, np.ndarray] = {}
    start = 0
    for position, table, offset in zip(positions, tables, offsets):
      t = len(table["index"])
      ints = np.empty((t, 2 * self.stack_size + 4), np.int32)
      ints[:, columns["state_rows"]] = table["state_rows"] + offset
      ints[:, columns["next_rows"]] = table["next_rows"] + offset
      for name in ("action", "next_action", "index"):
        ints[:, columns[name]] = table[name][:, None]
      ints[:, columns["position"]] = position
      int_parts.append(ints)
      float_parts.append(np.stack([table[c] for c in _FLOAT_COLUMNS], axis=1))
      self._ranges[position] = (start, start + t)
      self._row_offsets[position] = offset
      self._valid[position] = table["index"].astype(np.int64)
      start += t
    ints = np.concatenate(int_parts) if int_parts else np.zeros((0, 2 * self.stack_size + 4), np.int32)
    floats = np.concatenate(float_parts) if float_parts else np.zeros((0, len(_FLOAT_COLUMNS)), np.float32)
    if len(ints) == 0:
      raise DataError(f"checkpoints {[self.checkpoints[p][0] for p in positions]} of {self.directory} hold no "
                      f"valid transition (stack_size={self.stack_size}, update_horizon={self.update_horizon})")
    pad = self.transition_capacity - len(ints)
    if pad < 0:
      raise DataError(f"{len(ints)} valid transitions exceed the storage for {self.transition_capacity}")
    self.int_table.assign(np.concatenate([ints, np.zeros((pad, ints.shape[1]), np.int32)]))
    self.float_table.assign(np.concatenate([floats, np.zeros((pad, floats.shape[1]), np.float32)]))
    self.count.assign(len(ints))
    self.resident_positions = list(positions)
    self.num_rows = total_rows
    self.num_transitions = len(ints)
    self.cache_hits += sum(sl.cache_hit for sl in slices)
    self.load_seconds += time.time() - started
    self.version += 1
    logging.info("fixed replay: %d checkpoint(s) resident of %d, %d stored rows, %d valid transitions, "
                 "%.1f MB of frames, %.1f s loading, %d cache hit(s)", len(positions), len(self.checkpoints),
                 total_rows, len(ints), total_rows * 7056 / 1e6, self.load_seconds, self.cache_hits)

  # -- memory-bounded mode ---------------------------------------------------------------------------------

  def _positions_for_iteration(self, iteration: int) -> List[int]:
    rng = np.random.default_rng([self.seed, iteration, 0x5eed])
    return sorted(rng.choice(len(self.checkpoints), self.num_resident, replace=False).tolist())

  def _make_resident(self, positions: List[int]) -> None:
    self._install(positions, self._load_slices(positions))

  def set_resident(self, iteration: int) -> bool:
    """Memory-bounded mode: makes the checkpoints of `iteration` resident; True when they changed."""
    if not self.memory_bounded or iteration == self.resident_iteration:
      return False
    positions = self._positions_for_iteration(iteration)
    self.resident_iteration = iteration
    if positions == self.resident_positions:
      return False
    logging.info("fixed replay: iteration %d swaps in checkpoints %s", iteration,
                 [self.checkpoints[p][0] for p in positions])
    self._make_resident(positions)
    return True

  # -- Dopamine-style access -------------------------------------------------------------------------------

  def _resident_or_load(self, position: int) -> "FixedReplay":
    if not 0 <= position < len(self.checkpoints):
      raise IndexError(f"position {position} out of range: {len(self.checkpoints)} checkpoint(s) selected")
    if position in self._ranges:
      return self
    suffix, kept = self.checkpoints[position]
    single = FixedReplay(self.directory, [(suffix, kept)], stack_size=self.stack_size,
                         update_horizon=self.update_horizon, gamma=self.gamma, subset=self.subset, seed=self.seed,
                         cache_dir=self._cache.cache_dir if self._cache else None)
    single._ranges = {position: single._ranges[0]}  # pylint: disable=protected-access
    single._valid = {position: single._valid[0]}  # pylint: disable=protected-access
    return single

  def valid_indices(self, position: int) -> np.ndarray:
    """Sorted stored-row indices of the `position`-th checkpoint that Dopamine would accept as a transition."""
    replay = self._resident_or_load(position)
    return replay._valid[position].copy()  # pylint: disable=protected-access

  def get_transitions(self, position: int, indices: Sequence[int]) -> Dict[str, np.ndarray]:
    """The batch contract (numpy) for stored rows `indices` of the `position`-th checkpoint.

    The equivalent of Dopamine's `sample_transition_batch(indices=...)`; an index that is not valid raises.
    """
    replay = self._resident_or_load(position)
    indices = np.asarray(indices, np.int64).reshape(-1)
    valid = replay._valid[position]  # pylint: disable=protected-access
    where = np.searchsorted(valid, indices)
    bad = (where >= len(valid)) | (valid[np.minimum(where, len(valid) - 1)] != indices)
    if bad.any():
      raise ValueError(f"indices {indices[bad][:5].tolist()} of checkpoint position {position} are not valid "
                       f"transitions (see valid_indices)")
    ids = replay._ranges[position][0] + where  # pylint: disable=protected-access
    return {k: v.numpy() for k, v in replay.gather(tf.constant(ids, tf.int32)).items()}

  def gather(self, ids: tf.Tensor, unpacking: str = "transpose") -> Dict[str, tf.Tensor]:
    """The batch for transition ids (rows of the packed tables), from TF ops only (see FRAME_UNPACKING)."""
    s = self.stack_size
    columns = _int_columns(s)
    ints = tf.gather(self.int_table, ids)
    floats = tf.gather(self.float_table, ids)
    words = tf.gather(self.frames, ints[:, :2 * s])  # [B, 2 stacks, 1764] int32, 4 pixels per word
    batch = {"state": _stack_frames(words[:, :s], unpacking),
             "next_state": _stack_frames(words[:, s:], unpacking)}
    for name in ("action", "next_action", "index"):
      batch["indices" if name == "index" else name] = ints[:, columns[name].start]
    for i, name in enumerate(_FLOAT_COLUMNS):
      batch[name] = floats[:, i]
    return batch

  def nbytes(self) -> int:
    """Bytes held for the resident data: frames plus the per-transition tables (TF storage)."""
    return int(self.row_capacity * 7056 + self.transition_capacity * (self.int_table.shape[1] * 4 +
                                                                     len(_FLOAT_COLUMNS) * 4))

  def describe(self) -> Dict[str, object]:
    return {"directory": self.directory, "checkpoints": [s for s, _ in self.checkpoints],
            "transitions_per_checkpoint": sorted({k for _, k in self.checkpoints}, key=lambda k: (k is None, k)),
            "resident": [self.checkpoints[p][0] for p in self.resident_positions],
            "stored_rows": self.num_rows, "valid_transitions": self.num_transitions, "bytes": self.nbytes(),
            "setting": self.setting, "subset": self.subset}


# ----------------------------------------------------------------------------------------------------------
# Samplers


@gin.configurable
class InGraphSampler(tf.Module):
  """Uniform i.i.d. batches over the resident valid transitions, from TF ops only (XLA-compatible).

  The frames and tables are the replay's variables (shared by every sampler of it, and not saved in
  checkpoints); the sampler's own state is its `tf.random.Generator`, so `tf.train.Checkpoint(sampler=...)`
  restores the exact next batch.
  """

  def __init__(self, replay: FixedReplay, batch_size: int = 32, seed: int = 0, name: Optional[str] = None,
               frame_unpacking: str = "transpose"):
    """`frame_unpacking`: 'transpose' (fastest in graph mode, the CPU default) or 'swar' (fastest inside an
    XLA-compiled step); both give identical batches."""
    super().__init__(name=name)
    if batch_size < 1:
      raise ConfigError(f"InGraphSampler.batch_size={batch_size}; expected >= 1")
    if frame_unpacking not in FRAME_UNPACKING:
      raise ConfigError(f"InGraphSampler.frame_unpacking={frame_unpacking!r}; expected one of {FRAME_UNPACKING}")
    self.frame_unpacking = frame_unpacking
    self._replay = replay
    self.batch_size = int(batch_size)
    with tf.init_scope():
      self.rng = tf.random.Generator.from_seed(seed)

  def sample_ids(self) -> tf.Tensor:
    """[batch_size] int32 rows of the replay's transition tables, uniform over the valid ones."""
    return self.rng.uniform([self.batch_size], minval=0, maxval=self._replay.count, dtype=tf.int32)

  def sample(self) -> Dict[str, tf.Tensor]:
    return self._replay.gather(self.sample_ids(), self.frame_unpacking)

  def on_iteration_start(self, iteration: int) -> None:
    """Memory-bounded mode: swap in the iteration's checkpoints (same shapes: no retrace). Else a no-op."""
    self._replay.set_resident(int(iteration))


def make_tf_dataset(replay: FixedReplay, batch_size: int, seed: int) -> tf.data.Dataset:
  """An endless `tf.data.Dataset` of batches (the contract), uniform over the valid transitions; reproducible.

  Ids come from `tf.data.Dataset.random(seed)`; the batch is gathered from the replay's storage in the input
  pipeline, so a training loop can prefetch batches while the accelerator trains. In memory-bounded mode a
  swap is seen by the next batches gathered (a prefetched batch may still come from the previous checkpoints).
  """
  def to_batch(random_ints):
    ids = tf.cast(random_ints % tf.cast(replay.count, tf.int64), tf.int32)
    return replay.gather(ids)

  return (tf.data.Dataset.random(seed=seed).batch(batch_size, drop_remainder=True)
          .map(to_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2))


# ----------------------------------------------------------------------------------------------------------
# The gin entry point


def _resolve_replay_dir(data_dir: str, game: Optional[str], run: int) -> str:
  if game is not None:
    candidate = dqn_replay.replay_logs_dir(data_dir, game, run)
    if tf.io.gfile.isdir(candidate):
      return candidate
    if tf.io.gfile.isdir(data_dir) and dqn_replay.list_checkpoints(data_dir):
      return data_dir  # data_dir is already a replay_logs folder
    raise DataError(f"load_dataset.data_dir={data_dir!r}: no replay folder {candidate} (expected the layout "
                    f"<data_dir>/<Game>/<run>/replay_logs of the DQN Replay dataset, or data_dir itself being a "
                    f"replay_logs folder)")
  return data_dir


@gin.configurable
def load_dataset(data_dir: Optional[str] = None, game: Optional[str] = None, run: int = 1, setting: str = "1pct",
                 *, suffixes: Optional[Sequence[int]] = None, transitions_per_checkpoint: Optional[int] = None,
                 subset: str = "prefix", num_resident_checkpoints: Optional[int] = None,
                 cache_dir: Optional[str] = None, stack_size: int = 4, update_horizon: int = 1,
                 gamma: float = 0.99, seed: int = 0, allow_fewer: bool = False,
                 checkpoint_capacity: int = dqn_replay.CHECKPOINT_CAPACITY,
                 storage_device: Optional[str] = None) -> FixedReplay:
  """Loads a DQN Replay dataset the way the paper names it (game, run, setting); see `dqn_replay.SETTINGS`.

  Args:
    data_dir: the dataset root (`<root>/<Game>/<run>/replay_logs`) or directly a replay_logs folder; local,
      file:// or gs://.
    setting: '1pct', '5pct', 'first10pct', 'all' (ignored when `suffixes` is given).
    suffixes / transitions_per_checkpoint: explicit checkpoints and rows kept per checkpoint (None = all).
    subset: 'prefix' (the first rows of each checkpoint, as Dopamine-labs / CQL) or 'episodes' (d3rlpy's
      alternative: random whole episodes of each checkpoint, seeded, up to the same transition budget).
    num_resident_checkpoints: memory-bounded mode, K checkpoints resident and re-drawn every iteration.
    cache_dir: local folder for the uncompressed cache (second load memory-maps instead of gunzipping).
    allow_fewer: use the checkpoints present when the data has fewer than the setting names (tests, demos).
    checkpoint_capacity: rows of one logged checkpoint (1M); the percentages are of it.
    storage_device: TF device for the frames (e.g. '/CPU:0' when the data is larger than device memory).
  """
  if data_dir is None:
    raise ConfigError("load_dataset.data_dir is not set; pass --data_dir or bind load_dataset.data_dir")
  if subset not in SUBSETS:
    raise ConfigError(f"load_dataset.subset={subset!r}; expected one of {SUBSETS}")
  directory = _resolve_replay_dir(data_dir, game, run)
  available = dqn_replay.require_checkpoints(directory)
  selection = dqn_replay.select_checkpoints(
      setting, available, suffixes=suffixes, transitions_per_checkpoint=transitions_per_checkpoint,
      checkpoint_capacity=checkpoint_capacity, allow_fewer=allow_fewer)
  named = setting if suffixes is None else "explicit"
  if suffixes is None and dqn_replay.SETTINGS[setting][0] is not None:
    asked = len(dqn_replay.SETTINGS[setting][0])
    if len(selection) < asked:
      logging.warning("load_dataset: setting %r names %d checkpoints, the data at %s has only %d of them "
                      "(allow_fewer=True): this is not the paper's %s dataset", setting, asked, directory,
                      len(selection), setting)
  logging.info("load_dataset: %s, %s, checkpoints %s, %s transitions per checkpoint, subset %s%s", directory,
               named, dqn_replay.format_suffixes([s for s, _ in selection]),
               selection[0][1] if selection[0][1] is not None else "all", subset,
               f", {num_resident_checkpoints} resident at a time" if num_resident_checkpoints else "")
  replay = FixedReplay(directory, selection, stack_size=stack_size, update_horizon=update_horizon, gamma=gamma,
                       subset=subset, seed=seed, cache_dir=cache_dir,
                       num_resident_checkpoints=num_resident_checkpoints, storage_device=storage_device,
                       setting=named)
  logging.info("load_dataset: %s", json.dumps(replay.describe()))
  return replay
