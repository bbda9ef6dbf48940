"""Reading the rows of one checkpoint that a dataset keeps (a prefix, or whole episodes), from the gzipped
Dopamine files or the uncompressed cache: small arrays at once, frames as a stream of chunks or a memory map."""
from typing import Dict, Optional

import numpy as np

from batch_rl_dr3.data import dqn_replay
from batch_rl_dr3.data.replay_cache import ReplayCache
from batch_rl_dr3.data.transition_table import episode_rows

SUBSETS = ("prefix", "episodes")
CHUNK_ROWS = 8192


class CheckpointSlice:
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
      for start in range(0, self.rows, CHUNK_ROWS):
        yield np.asarray(self._frames[start:start + CHUNK_ROWS])
    else:
      yield from self._frame_chunks()


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
  for i in range(0, len(out), CHUNK_ROWS):
    yield out[i:i + CHUNK_ROWS]


def load_slice(directory: str, suffix: int, transitions: Optional[int], subset: str, seed: int,
                cache: Optional[ReplayCache], stack_size: int, update_horizon: int) -> CheckpointSlice:
  if subset == "prefix":
    slice_spec = f"prefix:{transitions}"
  else:
    slice_spec = f"episodes:{transitions}:seed{seed}:stack{stack_size}:n{update_horizon}"
  if cache is not None:
    hit = cache.lookup(directory, suffix, slice_spec)
    if hit is not None:
      return CheckpointSlice(hit, int(hit["num_rows"]), frames=hit["observation"], cache_hit=True)

  if subset == "prefix":
    small = dqn_replay.load_small_arrays(directory, suffix, transitions)
    capacity = int(small["num_rows"])
    rows = len(small["action"])
    chunks = lambda: dqn_replay.iter_observation_chunks(directory, suffix, rows, CHUNK_ROWS)  # noqa: E731
  else:
    full = dqn_replay.load_small_arrays(directory, suffix, None)
    file_rows = int(full["num_rows"])
    budget = transitions if transitions is not None else file_rows
    rng = np.random.default_rng([seed, suffix])
    rows = episode_rows(full, file_rows, budget, stack_size, rng)
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
    return CheckpointSlice(stored, capacity, frames=stored["observation"])
  return CheckpointSlice(small, capacity, frame_chunks=chunks)

