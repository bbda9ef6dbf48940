"""Which stored rows of a DQN Replay checkpoint are transitions, and what each transition holds (numpy).

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

`transition_table` returns, per valid transition, what a batch needs: the frame rows of the state and
next-state stacks, the n-step reward and discount, the next action and the Monte-Carlo return; `pack` lays
them out as the two tables `FixedReplay` gathers from (`int_columns`, `FLOAT_COLUMNS`).
"""
from typing import Dict

import numpy as np
import scipy.signal


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


def transition_table(small: Dict[str, np.ndarray], capacity: int, stack_size: int, update_horizon: int,
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



# Layout of the packed per-transition tables (one gather each when sampling).
def int_columns(stack_size: int) -> Dict[str, slice]:
  s = stack_size
  return {"state_rows": slice(0, s), "next_rows": slice(s, 2 * s), "action": slice(2 * s, 2 * s + 1),
          "next_action": slice(2 * s + 1, 2 * s + 2), "index": slice(2 * s + 2, 2 * s + 3),
          "position": slice(2 * s + 3, 2 * s + 4)}


FLOAT_COLUMNS = ("reward", "terminal", "discount", "return_to_go")


def pack(table: Dict[str, np.ndarray], row_offset: int, position: int, stack_size: int):
  """(int32 [T, 2 stack + 4], float32 [T, 4]) rows of the packed tables for one checkpoint's `table`, whose
  frames start at row `row_offset` of the frame storage."""
  columns = int_columns(stack_size)
  ints = np.empty((len(table["index"]), 2 * stack_size + 4), np.int32)
  ints[:, columns["state_rows"]] = table["state_rows"] + row_offset
  ints[:, columns["next_rows"]] = table["next_rows"] + row_offset
  for name in ("action", "next_action", "index"):
    ints[:, columns[name]] = table[name][:, None]
  ints[:, columns["position"]] = position
  return ints, np.stack([table[c] for c in FLOAT_COLUMNS], axis=1).astype(np.float32)


def episode_rows(small: Dict[str, np.ndarray], capacity: int, budget: int, stack_size: int,
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

