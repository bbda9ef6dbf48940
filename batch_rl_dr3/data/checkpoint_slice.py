"""Reading the rows of one checkpoint that a dataset keeps, from the gzipped Dopamine files or the uncompressed
cache: small arrays at once, frames as a stream of chunks or a memory map.

Subsets (which transitions of a checkpoint a dataset keeps, given k = transitions per checkpoint):

* ``prefix`` (default): the first k stored rows. This is what the published DR3 / CQL / REM numbers ran on:
  batch_rl's `FixedReplayBuffer._load_buffer` truncates every loaded array to ``array[:replay_capacity + 4]``
  (google-research/batch_rl, batch_rl/fixed_replay/replay_memory/fixed_replay_buffer.py) and CQL's Atari code
  forces ``replay_capacity = 10000`` for 1 % ("subsampling the first 10000 samples from each of them",
  aviralkumar2907/CQL atari/README.md); see /work/shared/reference/formats.md §1.6, §2.1.
* ``uniform``: what the DR3 paper's text says ("an offline dataset consisting of 1% of uniformly-sampled data
  from the replay buffer of DQN", Sec. 3.1): k valid transitions drawn uniformly without replacement from all
  valid transitions of the whole checkpoint, from ``default_rng([seed, suffix, 0x756e69])`` (so the draw is
  fixed by the seed and differs between checkpoints). Each kept transition is the whole checkpoint's
  transition at that index, with Dopamine's semantics (stacks, n-step, Monte-Carlo return over the whole
  checkpoint); the frames its two stacks read are stored, so this holds up to ``stack_size + update_horizon``
  frames per transition (about 5x a prefix's frames at 1 %), and the whole observation file is decompressed.
* ``episodes``: d3rlpy's alternative, random whole episodes up to the same budget, seeded.
"""
from typing import Dict, Optional

import numpy as np

from batch_rl_dr3.data import dqn_replay
from batch_rl_dr3.data.replay_cache import ReplayCache
from batch_rl_dr3.data.transition_table import episode_rows, transition_table

SUBSETS = ("prefix", "uniform", "episodes")
CHUNK_ROWS = 8192
_TABLE_PREFIX = "table_"


class CheckpointSlice:
  """The rows of one checkpoint that a dataset keeps: small arrays, frames (array or chunk stream), N.

  `table`: the slice's transition table when it is not the one `transition_table` derives from the rows
  (the uniform subset, whose transitions are scattered over the checkpoint); None otherwise.
  """

  def __init__(self, small: Dict[str, np.ndarray], capacity: int, frames=None, frame_chunks=None,
               cache_hit: bool = False, table: Optional[Dict[str, np.ndarray]] = None):
    self.small = small
    self.capacity = capacity
    self.rows = len(small["action"])
    self._frames = frames
    self._frame_chunks = frame_chunks
    self.cache_hit = cache_hit
    if table is None and any(k.startswith(_TABLE_PREFIX) for k in small):
      table = {k[len(_TABLE_PREFIX):]: v for k, v in small.items() if k.startswith(_TABLE_PREFIX)}
    self.table = table

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


def uniform_rows(full: Dict[str, np.ndarray], transitions: Optional[int], seed: int, suffix: int,
                 stack_size: int, update_horizon: int, gamma: float):
  """(stored rows to keep, sorted; the transition table of the drawn transitions, rows local to those).

  `full` holds the whole checkpoint's small arrays; `transitions` valid transitions (all if None or more than
  there are) are drawn uniformly without replacement, seeded by (seed, suffix).
  """
  capacity = int(full["num_rows"])
  whole = transition_table(full, capacity, stack_size, update_horizon, gamma)
  available = len(whole["index"])
  count = available if transitions is None else min(int(transitions), available)
  rng = np.random.default_rng([seed, suffix, 0x756e69])
  chosen = np.sort(rng.choice(available, count, replace=False))
  table = {name: values[chosen] for name, values in whole.items()}
  rows = np.unique(np.concatenate([table["state_rows"].ravel(), table["next_rows"].ravel()]))
  for name in ("state_rows", "next_rows"):
    table[name] = np.searchsorted(rows, table[name]).astype(np.int32)
  return rows.astype(np.int64), table


def load_slice(directory: str, suffix: int, transitions: Optional[int], subset: str, seed: int,
               cache: Optional[ReplayCache], stack_size: int, update_horizon: int,
               gamma: float = 0.99) -> CheckpointSlice:
  if subset == "prefix":
    slice_spec = f"prefix:{transitions}"
  elif subset == "uniform":
    slice_spec = f"uniform:{transitions}:seed{seed}:stack{stack_size}:n{update_horizon}:gamma{gamma!r}"
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
  elif subset == "uniform":
    full = dqn_replay.load_small_arrays(directory, suffix, None)
    capacity = int(full["num_rows"])
    rows, table = uniform_rows(full, transitions, seed, suffix, stack_size, update_horizon, gamma)
    small = {name: full[name][rows] for name in ("action", "reward", "terminal")}
    small.update({"add_count": full["add_count"], "invalid_range": full["invalid_range"],
                  "num_rows": np.array(capacity, np.int64)})
    small.update({_TABLE_PREFIX + name: values for name, values in table.items()})
    chunks = lambda: _read_rows(directory, suffix, rows)  # noqa: E731
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

