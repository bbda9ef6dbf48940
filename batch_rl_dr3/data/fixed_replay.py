"""Fixed replay: DQN Replay checkpoints held in memory with Dopamine's transition semantics.

`FixedReplay` stores every loaded frame once (`frame_store`: one 84x84 frame per stored row as 1,764 int32
words, in a `tf.Variable` shared by the samplers) and precomputes, per valid transition, what a batch needs
(`transition_table`: which rows are transitions, with Dopamine's semantics). Sampling is then a pure gather
(`samplers`: `InGraphSampler`, `make_tf_dataset`, importable from here too). Rows are read by
`checkpoint_slice` (gz files or the uncompressed cache).

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
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

from absl import logging
import gin
import numpy as np
import tensorflow as tf

from batch_rl_dr3.data import dqn_replay
from batch_rl_dr3.data.checkpoint_slice import SUBSETS, CheckpointSlice, load_slice
from batch_rl_dr3.data.frame_store import COPY_ROWS, FRAME_BYTES, FRAME_UNPACKING, FRAME_WORDS, as_words, stack_frames
from batch_rl_dr3.data.replay_cache import ReplayCache
from batch_rl_dr3.data.samplers import InGraphSampler, make_tf_dataset
from batch_rl_dr3.data.transition_table import FLOAT_COLUMNS, int_columns, pack, transition_table
from batch_rl_dr3.errors import ConfigError, DataError
from batch_rl_dr3.progress import Progress

__all__ = ["FixedReplay", "InGraphSampler", "make_tf_dataset", "load_dataset", "FRAME_UNPACKING", "SUBSETS"]
_MAX_LOAD_THREADS = 8


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

    Keyword-only extras: subset ('prefix' | 'uniform' | 'episodes'), seed, cache_dir, num_resident_checkpoints,
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
      self.frames = tf.Variable(tf.raw_ops.Empty(shape=[max(row_capacity, 1), FRAME_WORDS], dtype=tf.int32,
                                                 init=False),
                                trainable=False, name="replay_frames")
      self.int_table = tf.Variable(tf.zeros([max(transition_capacity, 1), 2 * s + 4], tf.int32),
                                   trainable=False, name="replay_int_table")
      self.float_table = tf.Variable(tf.zeros([max(transition_capacity, 1), len(FLOAT_COLUMNS)], tf.float32),
                                     trainable=False, name="replay_float_table")
      self.count = tf.Variable(0, dtype=tf.int32, trainable=False, name="replay_count")
    self.row_capacity = row_capacity
    self.transition_capacity = transition_capacity

  def _load_slice(self, position: int) -> CheckpointSlice:
    suffix, kept = self.checkpoints[position]
    return load_slice(self.directory, suffix, kept, self.subset, self.seed, self._cache, self.stack_size,
                      self.update_horizon, self.gamma)

  def _load_slices(self, positions: List[int]) -> List[CheckpointSlice]:
    """Small arrays of each checkpoint (frames stay streams or memory maps until installed)."""
    started = time.time()
    workers = max(1, min(_MAX_LOAD_THREADS, len(positions)))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      slices = list(pool.map(self._load_slice, positions))
    self.load_seconds += time.time() - started
    return slices

  def _install(self, positions: List[int], slices: List[CheckpointSlice]) -> None:
    """Streams the slices' frames into the frame variable and builds the transition tables."""
    started = time.time()
    tables = []
    offsets, row = [], 0
    for position, sl in zip(positions, slices):
      tables.append(sl.table if sl.table is not None else
                    transition_table(sl.small, sl.capacity, self.stack_size, self.update_horizon, self.gamma))
      offsets.append(row)
      row += sl.rows
    if row > self.row_capacity:
      raise DataError(f"checkpoints {positions} need {row} rows but the storage holds {self.row_capacity}")

    total_rows = row
    name = f"load {len(positions)} checkpoint(s) of {self.directory}"
    progress = Progress(name, total_rows, "rows", every_seconds=10)

    def copy_frames(args):
      offset, sl, position = args
      at = offset
      for chunk in sl.frame_chunks():
        for start in range(0, len(chunk), COPY_ROWS):
          # A scatter of whole rows: strided-slice assignment is orders of magnitude slower on CPU.
          rows = chunk[start:start + COPY_ROWS]
          self.frames.scatter_update(tf.IndexedSlices(as_words(rows), tf.range(at, at + len(rows))))
          at += len(rows)
        with self._lock:
          progress.update(len(chunk))
      if at - offset != sl.rows:
        raise DataError(f"checkpoint {self.checkpoints[position][0]}: {at - offset} frames for {sl.rows} rows")

    workers = max(1, min(_MAX_LOAD_THREADS, len(positions)))
    with progress, concurrent.futures.ThreadPoolExecutor(workers) as pool:
      list(pool.map(copy_frames, zip(offsets, slices, positions)))

    int_parts, float_parts = [], []
    self._ranges: Dict[int, Tuple[int, int]] = {}
    self._valid: Dict[int, np.ndarray] = {}
    start = 0
    for position, table, offset in zip(positions, tables, offsets):
      ints, floats = pack(table, offset, position, self.stack_size)
      int_parts.append(ints)
      float_parts.append(floats)
      self._ranges[position] = (start, start + len(ints))
      self._valid[position] = table["index"].astype(np.int64)
      start += len(ints)
    ints = np.concatenate(int_parts) if int_parts else np.zeros((0, 2 * self.stack_size + 4), np.int32)
    floats = np.concatenate(float_parts) if float_parts else np.zeros((0, len(FLOAT_COLUMNS)), np.float32)
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
                 total_rows, len(ints), total_rows * FRAME_BYTES / 1e6, self.load_seconds, self.cache_hits)

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

  def _checkpoint_table(self, position: int) -> Tuple["FixedReplay", int, np.ndarray]:
    """(replay holding it, first row of its transitions in the packed tables, its valid stored-row indices) for
    the `position`-th checkpoint: this replay when resident, else a one-checkpoint replay loaded for the call."""
    if not 0 <= position < len(self.checkpoints):
      raise IndexError(f"position {position} out of range: {len(self.checkpoints)} checkpoint(s) selected")
    if position in self._ranges:
      return self, self._ranges[position][0], self._valid[position]
    suffix, kept = self.checkpoints[position]
    single = FixedReplay(self.directory, [(suffix, kept)], stack_size=self.stack_size,
                         update_horizon=self.update_horizon, gamma=self.gamma, subset=self.subset, seed=self.seed,
                         cache_dir=self._cache.cache_dir if self._cache else None)
    return single, 0, single.valid_indices(0)

  def valid_indices(self, position: int) -> np.ndarray:
    """Sorted stored-row indices of the `position`-th checkpoint that Dopamine would accept as a transition."""
    return self._checkpoint_table(position)[2].copy()

  def get_transitions(self, position: int, indices: Sequence[int]) -> Dict[str, np.ndarray]:
    """The batch contract (numpy) for stored rows `indices` of the `position`-th checkpoint.

    The equivalent of Dopamine's `sample_transition_batch(indices=...)`; an index that is not valid raises.
    """
    replay, first, valid = self._checkpoint_table(position)
    indices = np.asarray(indices, np.int64).reshape(-1)
    where = np.searchsorted(valid, indices)
    bad = (where >= len(valid)) | (valid[np.minimum(where, len(valid) - 1)] != indices)
    if bad.any():
      raise ValueError(f"indices {indices[bad][:5].tolist()} of checkpoint position {position} are not valid "
                       f"transitions (see valid_indices)")
    return {k: v.numpy() for k, v in replay.gather(tf.constant(first + where, tf.int32)).items()}

  def gather(self, ids: tf.Tensor, unpacking: str = "transpose") -> Dict[str, tf.Tensor]:
    """The batch for transition ids (rows of the packed tables), from TF ops only (see FRAME_UNPACKING)."""
    s = self.stack_size
    columns = int_columns(s)
    ints = tf.gather(self.int_table, ids)
    floats = tf.gather(self.float_table, ids)
    words = tf.gather(self.frames, ints[:, :2 * s])  # [B, 2 stacks, 1764] int32, 4 pixels per word
    batch = {"state": stack_frames(words[:, :s], unpacking),
             "next_state": stack_frames(words[:, s:], unpacking)}
    for name in ("action", "next_action", "index"):
      batch["indices" if name == "index" else name] = ints[:, columns[name].start]
    for i, name in enumerate(FLOAT_COLUMNS):
      batch[name] = floats[:, i]
    return batch

  def dataset_actions(self) -> np.ndarray:
    """The action of every resident valid transition (int32), e.g. to check them against a game's actions."""
    column = int_columns(self.stack_size)["action"].start
    return self.int_table[:self.count, column].numpy()

  def nbytes(self) -> int:
    """Bytes held for the resident data: frames plus the per-transition tables (TF storage)."""
    return int(self.row_capacity * FRAME_BYTES + self.transition_capacity * (self.int_table.shape[1] * 4 +
                                                                     len(FLOAT_COLUMNS) * 4))

  def describe(self) -> Dict[str, object]:
    return {"directory": self.directory, "checkpoints": [s for s, _ in self.checkpoints],
            "transitions_per_checkpoint": sorted({k for _, k in self.checkpoints}, key=lambda k: (k is None, k)),
            "resident": [self.checkpoints[p][0] for p in self.resident_positions],
            "stored_rows": self.num_rows, "valid_transitions": self.num_transitions, "bytes": self.nbytes(),
            "setting": self.setting, "subset": self.subset,
            "subset_seed": None if self.subset == "prefix" else self.seed}

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
    subset: 'prefix' (default: the first rows of each checkpoint, what the published numbers ran on:
      batch_rl / Dopamine-labs / CQL), 'uniform' (the paper's text, "1% of uniformly-sampled data": that many
      transitions drawn uniformly from each checkpoint, seeded by `seed`) or 'episodes' (d3rlpy's alternative:
      random whole episodes of each checkpoint, seeded, up to the same transition budget). See
      `checkpoint_slice`.
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
