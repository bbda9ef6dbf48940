"""FixedReplay against Dopamine's own replay buffer: valid indices and transitions, n = 1 and 3, episode ends,
wrap-around, prefixes; return-to-go by hand; the cache; load_dataset and its settings."""

import gin
import numpy as np
import pytest

import batch_rl_dr3  # noqa: F401
from batch_rl_dr3.data import dqn_replay
from batch_rl_dr3.data import fixed_replay
from batch_rl_dr3.data import frame_store
from batch_rl_dr3.data.replay_cache import ReplayCache
from batch_rl_dr3.errors import ConfigError, DataError
from tests.replay_fixtures import (dopamine_batch, dopamine_valid_indices, frame_step, load_dopamine,
                                   write_dopamine_checkpoint, write_run)

GAMMA = 0.99
_COMPARED = ("state", "action", "reward", "next_state", "next_action", "terminal", "indices")


def _assert_equals_dopamine(ours, theirs):
  for name in _COMPARED:
    want = np.asarray(theirs[name])
    got = ours[name]
    if name == "reward":
      np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=name)
    else:
      np.testing.assert_array_equal(got, want.astype(got.dtype), err_msg=name)
  assert ours["state"].shape[1:] == (84, 84, 4) and ours["state"].dtype == np.uint8
  assert ours["action"].dtype == np.int32 and ours["next_action"].dtype == np.int32
  for name in ("reward", "terminal", "discount", "return_to_go"):
    assert ours[name].dtype == np.float32, name


@pytest.mark.parametrize("update_horizon", [1, 3])
@pytest.mark.parametrize("num_transitions", [60, 150], ids=["not_full_cut_episode", "full_wrapped"])
def test_transitions_equal_dopamine_saved_buffer(tmp_path, update_horizon, num_transitions):
  # Episodes shorter than the stack and than n; the last one cut without a terminal; capacity 100 so that
  # 150 steps wrap around and leave the cursor mid-buffer.
  buffer = write_dopamine_checkpoint(str(tmp_path), 0, capacity=100, episode_lengths=[5, 1, 7, 2, 30, 3],
                                     num_transitions=num_transitions, update_horizon=update_horizon,
                                     last_episode_terminal=False)
  replay = fixed_replay.FixedReplay.from_checkpoints(str(tmp_path), [0], update_horizon=update_horizon)
  valid = replay.valid_indices(0)
  assert valid.tolist() == dopamine_valid_indices(buffer)
  ours = replay.get_transitions(0, valid)
  _assert_equals_dopamine(ours, dopamine_batch(buffer, valid))
  np.testing.assert_allclose(ours["discount"], np.where(ours["terminal"] > 0, 0.0, GAMMA ** update_horizon),
                             rtol=1e-6)


@pytest.mark.parametrize("update_horizon", [1, 3])
def test_logged_run_equals_dopamine_loading_the_same_files(tmp_path, update_horizon):
  directory = write_run(tmp_path, num_checkpoints=3, capacity=120, seed=3)
  replay = fixed_replay.FixedReplay.from_checkpoints(directory, [0, 1, 2], update_horizon=update_horizon)
  for position, suffix in enumerate([0, 1, 2]):
    buffer = load_dopamine(directory, suffix, 120, update_horizon=update_horizon)
    valid = replay.valid_indices(position)
    assert valid.tolist() == dopamine_valid_indices(buffer)
    _assert_equals_dopamine(replay.get_transitions(position, valid), dopamine_batch(buffer, valid))
  assert replay.num_transitions == sum(len(replay.valid_indices(p)) for p in range(3))


def test_final_partial_checkpoint_equals_dopamine(tmp_path):
  # batch_rl's log_final_buffer: the last suffix is logged with add_count = cursor, so it reads as not full
  # and only the rows before the cursor are transitions (older rows behind it are ignored).
  directory = write_run(tmp_path, num_checkpoints=2, capacity=100, seed=8, final_partial=True, extra_steps=40)
  assert dqn_replay.list_checkpoints(directory) == [0, 1, 2]
  arrays = dqn_replay.load_checkpoint(directory, 2)
  assert 30 < int(arrays["add_count"]) < 100
  replay = fixed_replay.FixedReplay.from_checkpoints(directory, [2])
  buffer = load_dopamine(directory, 2, 100)
  valid = replay.valid_indices(0)
  assert valid.tolist() == dopamine_valid_indices(buffer) and valid.max() < int(arrays["add_count"]) - 1
  _assert_equals_dopamine(replay.get_transitions(0, valid), dopamine_batch(buffer, valid))


@pytest.mark.parametrize("update_horizon", [1, 3])
def test_prefix_keeps_whole_checkpoint_transitions_inside_the_prefix(tmp_path, update_horizon):
  directory = write_run(tmp_path, num_checkpoints=2, capacity=200, seed=5)
  prefix = 57
  replay = fixed_replay.FixedReplay.from_checkpoints(directory, [0, 1], transitions_per_checkpoint=prefix,
                                                     update_horizon=update_horizon)
  for position in (0, 1):
    whole = load_dopamine(directory, position, 200, update_horizon=update_horizon)
    expected = [i for i in dopamine_valid_indices(whole) if 3 <= i and i + update_horizon <= prefix - 1]
    valid = replay.valid_indices(position)
    assert valid.tolist() == expected and len(expected) > 20
    _assert_equals_dopamine(replay.get_transitions(position, valid), dopamine_batch(whole, valid))
  assert replay.num_rows == 2 * prefix  # only the prefix is held


def test_prefix_load_streams_only_the_prefix(tmp_path):
  directory = write_run(tmp_path, num_checkpoints=1, capacity=300, seed=6)
  whole = fixed_replay.FixedReplay.from_checkpoints(directory, [0])
  # Cut the frames file to its first half: a 40-row prefix still loads, as only the prefix is decompressed.
  path = dqn_replay.checkpoint_path(directory, "observation", 0)
  with open(path, "rb") as f:
    payload = f.read()
  with open(path, "wb") as f:
    f.write(payload[:len(payload) // 2])
  prefix = fixed_replay.FixedReplay.from_checkpoints(directory, [0], transitions_per_checkpoint=40)
  valid = prefix.valid_indices(0)
  assert valid.tolist() == [i for i in whole.valid_indices(0) if i <= 38]
  ours, want = prefix.get_transitions(0, valid), whole.get_transitions(0, valid)
  for name in want:
    if name != "return_to_go":  # stops at the prefix end (tested by hand in test_return_to_go_by_hand)
      np.testing.assert_array_equal(ours[name], want[name], err_msg=name)
  with pytest.raises(DataError, match=r"is truncated"):
    fixed_replay.FixedReplay.from_checkpoints(directory, [0])


def test_prefix_of_a_wrapped_buffer_never_glues_across_the_cursor(tmp_path):
  buffer = write_dopamine_checkpoint(str(tmp_path), 0, capacity=100, episode_lengths=[40, 3, 25],
                                     num_transitions=120)
  cursor = int(buffer.cursor())
  assert 3 < cursor < 60  # the newest/oldest boundary lies inside the 60-row prefix
  replay = fixed_replay.FixedReplay.from_checkpoints(str(tmp_path), [0], transitions_per_checkpoint=60)
  expected = [i for i in dopamine_valid_indices(buffer) if 3 <= i <= 58]
  assert replay.valid_indices(0).tolist() == expected
  assert not set(range(cursor - 1, cursor + 3)) & set(expected)
  _assert_equals_dopamine(replay.get_transitions(0, expected), dopamine_batch(buffer, expected))


def _hand_return(reward, terminal, index, last_row, rows):
  """Discounted return walking forward from `index` until a terminal or the newest loaded row."""
  total, power, j = 0.0, 1.0, index
  while True:
    total += power * float(reward[j])
    if terminal[j] or j == last_row:
      return total
    j, power = (j + 1) % rows, power * GAMMA


@pytest.mark.parametrize("case", ["logged_whole", "logged_prefix", "wrapped_whole", "not_full"])
def test_return_to_go_by_hand(tmp_path, case):
  if case.startswith("logged"):
    directory = write_run(tmp_path, num_checkpoints=2, capacity=150, seed=11)
    suffix, prefix = 1, (70 if case == "logged_prefix" else None)
  else:
    directory, suffix, prefix = str(tmp_path), 0, None
    write_dopamine_checkpoint(directory, 0, capacity=100, episode_lengths=[45, 3, 26],
                              num_transitions=150 if case == "wrapped_whole" else 70, last_episode_terminal=False)
  arrays = dqn_replay.load_checkpoint(directory, suffix)
  rows = len(arrays["reward"])
  add_count = int(arrays["add_count"])
  cursor = add_count % rows
  last_row = (cursor - 1) % rows  # the newest row written
  if prefix is not None and not cursor - 1 < prefix:
    last_row = prefix - 1
  replay = fixed_replay.FixedReplay.from_checkpoints(directory, [suffix], transitions_per_checkpoint=prefix)
  valid = replay.valid_indices(0)
  got = replay.get_transitions(0, valid)["return_to_go"]
  want = [_hand_return(arrays["reward"], arrays["terminal"], i, last_row, rows) for i in valid]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert np.abs(np.asarray(want)).max() > 0.5  # rewards are really summed


def test_invalid_index_is_rejected(tmp_path):
  directory = write_run(tmp_path, num_checkpoints=1, capacity=100)
  replay = fixed_replay.FixedReplay.from_checkpoints(directory, [0])
  with pytest.raises(ValueError, match=r"indices \[0\] of checkpoint position 0 are not valid"):
    replay.get_transitions(0, [0])


def test_frames_are_stored_once(tmp_path):
  directory = write_run(tmp_path, num_checkpoints=2, capacity=150)
  replay = fixed_replay.FixedReplay.from_checkpoints(directory, [0, 1])
  assert replay.frames.shape == (300, 84 * 84 // 4) and replay.frames.dtype == np.int32  # 4 pixels a word
  per_row = replay.nbytes() / replay.num_rows
  assert 7056 <= per_row <= 1.1 * 7056


def test_frames_span_several_copy_chunks(tmp_path):
  """Loads copy frames in chunks of a few thousand rows: a checkpoint bigger than several of them holds every
  row in place, from the .gz, through a cache miss and from a cache hit."""
  rows = 2 * frame_store.COPY_ROWS + 517
  directory = write_run(tmp_path / "data", num_checkpoints=2, capacity=rows, seed=9)
  want = np.concatenate([dqn_replay.load_checkpoint(directory, s)["observation"] for s in (0, 1)])
  for cache_dir in (None, str(tmp_path / "cache"), str(tmp_path / "cache")):
    replay = fixed_replay.FixedReplay.from_checkpoints(directory, [0, 1], cache_dir=cache_dir)
    got = replay.frames.numpy().view(np.uint8).reshape(-1, 84, 84)
    np.testing.assert_array_equal(got[:replay.num_rows], want)


# ---------------------------------------------------------------------------------------------------------
# Cache


def _all_transitions(replay):
  return [replay.get_transitions(p, replay.valid_indices(p)) for p in range(len(replay.checkpoints))]


def test_cache_hit_is_identical_and_invalidated_on_change(tmp_path):
  directory = write_run(tmp_path / "data", num_checkpoints=2, capacity=120, seed=2)
  cache_dir = str(tmp_path / "cache")
  plain = fixed_replay.FixedReplay.from_checkpoints(directory, [0, 1], transitions_per_checkpoint=80)
  first = fixed_replay.FixedReplay.from_checkpoints(directory, [0, 1], transitions_per_checkpoint=80,
                                                    cache_dir=cache_dir)
  second = fixed_replay.FixedReplay.from_checkpoints(directory, [0, 1], transitions_per_checkpoint=80,
                                                     cache_dir=cache_dir)
  assert (first.cache_hits, second.cache_hits) == (0, 2)
  hit = ReplayCache(cache_dir).lookup(directory, 1, "prefix:80")
  assert isinstance(hit["observation"], np.memmap) and hit["observation"].shape == (80, 84, 84)
  for a, b, c in zip(_all_transitions(plain), _all_transitions(first), _all_transitions(second)):
    for name in a:
      np.testing.assert_array_equal(a[name], b[name])
      np.testing.assert_array_equal(a[name], c[name])
  # Rewrite checkpoint 1 with other rewards: its entry is stale, checkpoint 0's is still used.
  arrays = dqn_replay.load_checkpoint(directory, 1)
  arrays["reward"] = arrays["reward"] + 5.0
  dqn_replay.save_checkpoint(directory, 1, arrays)
  third = fixed_replay.FixedReplay.from_checkpoints(directory, [0, 1], transitions_per_checkpoint=80,
                                                    cache_dir=cache_dir)
  assert third.cache_hits == 1
  np.testing.assert_allclose(third.get_transitions(1, third.valid_indices(1))["reward"],
                             _all_transitions(plain)[1]["reward"] + 5.0)
  # A different slice of the same checkpoint is a different entry.
  other = fixed_replay.FixedReplay.from_checkpoints(directory, [0], transitions_per_checkpoint=50,
                                                    cache_dir=cache_dir)
  assert other.cache_hits == 0 and other.num_rows == 50


# ---------------------------------------------------------------------------------------------------------
# d3rlpy-style episode subset


def test_episode_subset_holds_whole_random_episodes(tmp_path):
  directory = write_run(tmp_path, num_checkpoints=1, capacity=300, seed=4,
                        episode_lengths=[12, 30, 7, 25, 18, 40, 9, 22])
  whole = fixed_replay.FixedReplay.from_checkpoints(directory, [0])
  by_step = {}
  batch = whole.get_transitions(0, whole.valid_indices(0))
  for k, state in enumerate(batch["state"]):
    by_step[frame_step(state[..., -1])] = k
  budget = 60
  subset = fixed_replay.FixedReplay.from_checkpoints(directory, [0], transitions_per_checkpoint=budget,
                                                     subset="episodes", seed=1)
  ours = subset.get_transitions(0, subset.valid_indices(0))
  steps = [frame_step(s[..., -1]) for s in ours["state"]]
  # Every transition is the whole checkpoint's transition for the same step ...
  for k, step in enumerate(steps):
    j = by_step[step]
    for name in ("action", "reward", "next_action", "terminal", "discount", "return_to_go"):
      np.testing.assert_allclose(ours[name][k], batch[name][j], rtol=1e-6, err_msg=name)
    np.testing.assert_array_equal(ours["next_state"][k], batch["next_state"][j])
  # ... episodes are whole (each ends with a terminal, every step a transition) and within the budget.
  episodes = int(ours["terminal"].sum())
  assert episodes >= 2 and len(steps) <= budget and steps[-1] == max(steps)
  assert subset.num_rows == len(steps) + 3 * episodes + 3  # 3 padding rows before each episode and after
  again = fixed_replay.FixedReplay.from_checkpoints(directory, [0], transitions_per_checkpoint=budget,
                                                    subset="episodes", seed=1)
  assert again.valid_indices(0).tolist() == subset.valid_indices(0).tolist()
  other = fixed_replay.FixedReplay.from_checkpoints(directory, [0], transitions_per_checkpoint=budget,
                                                    subset="episodes", seed=2)
  other_steps = sorted(frame_step(s[..., -1]) for s in other.get_transitions(0, other.valid_indices(0))["state"])
  assert other_steps != sorted(steps)


# ---------------------------------------------------------------------------------------------------------
# The paper's "uniformly-sampled" subset


@pytest.mark.parametrize("update_horizon", [1, 3])
def test_uniform_subset_draws_valid_transitions_equal_to_dopamines(tmp_path, update_horizon):
  directory = write_run(tmp_path / "data", num_checkpoints=2, capacity=150, seed=5)
  budget = 40
  uniform = fixed_replay.FixedReplay.from_checkpoints(directory, [0, 1], transitions_per_checkpoint=budget,
                                                      update_horizon=update_horizon, subset="uniform", seed=3)
  assert uniform.num_transitions == 2 * budget
  drawn = []
  for position in (0, 1):
    buffer = load_dopamine(directory, position, 150, update_horizon=update_horizon)
    valid = uniform.valid_indices(position)
    # `budget` distinct transitions, every one valid for Dopamine, and each equal to Dopamine's transition.
    assert len(valid) == budget == len(set(valid.tolist()))
    assert set(valid.tolist()) <= set(dopamine_valid_indices(buffer))
    ours = uniform.get_transitions(position, valid)
    _assert_equals_dopamine(ours, dopamine_batch(buffer, valid))
    # ... with the whole checkpoint's Monte-Carlo return (not one cut at a prefix).
    whole = fixed_replay.FixedReplay.from_checkpoints(directory, [position], update_horizon=update_horizon)
    np.testing.assert_allclose(ours["return_to_go"], whole.get_transitions(0, valid)["return_to_go"], rtol=1e-6)
    drawn.append(valid)
  # Spread over the whole checkpoint, unlike a prefix of the same size.
  assert max(v.max() for v in drawn) > 100
  # Frames stored: only those the drawn stacks read, at most stack + n per transition.
  assert uniform.num_rows <= 2 * budget * (4 + update_horizon)
  # Reproducible per seed; another seed draws other transitions; checkpoints get different draws.
  again = fixed_replay.FixedReplay.from_checkpoints(directory, [0, 1], transitions_per_checkpoint=budget,
                                                    update_horizon=update_horizon, subset="uniform", seed=3)
  assert [again.valid_indices(p).tolist() for p in (0, 1)] == [v.tolist() for v in drawn]
  other = fixed_replay.FixedReplay.from_checkpoints(directory, [0, 1], transitions_per_checkpoint=budget,
                                                    update_horizon=update_horizon, subset="uniform", seed=4)
  assert other.valid_indices(0).tolist() != drawn[0].tolist()
  assert uniform.describe()["subset"] == "uniform" and uniform.describe()["subset_seed"] == 3


def test_uniform_subset_is_uniform_over_valid_transitions(tmp_path):
  # Over many seeds every valid transition is drawn about equally often: 30 of 120-ish, 200 draws each.
  directory = write_run(tmp_path, num_checkpoints=1, capacity=130, seed=6)
  full = dqn_replay.load_small_arrays(directory, 0)
  valid = fixed_replay.FixedReplay.from_checkpoints(directory, [0]).valid_indices(0)
  from batch_rl_dr3.data.checkpoint_slice import uniform_rows
  counts = np.zeros(full["num_rows"], np.int64)
  for seed in range(200):
    _, table = uniform_rows(full, 30, seed, 0, 4, 1, GAMMA)
    counts[table["index"]] += 1
  assert set(np.flatnonzero(counts).tolist()) <= set(valid.tolist())
  expected = 200 * 30 / len(valid)
  # Binomial(200, 30/len) per index: std ~ sqrt(expected); 5 std bounds over ~120 indices.
  assert np.all(np.abs(counts[valid] - expected) < 5 * np.sqrt(expected))
  # More than the checkpoint holds keeps them all.
  _, everything = uniform_rows(full, 10**6, 0, 0, 4, 1, GAMMA)
  assert everything["index"].tolist() == valid.tolist()


def test_uniform_subset_through_the_cache_and_load_dataset(tmp_path):
  write_run(tmp_path / "data", game="Pong", run=1, num_checkpoints=2, capacity=120, seed=8)
  cache_dir = str(tmp_path / "cache")
  kwargs = dict(data_dir=str(tmp_path / "data"), game="Pong", run=1, setting="1pct", checkpoint_capacity=3000,
                allow_fewer=True, subset="uniform", seed=2)
  plain = fixed_replay.load_dataset(**kwargs)
  first = fixed_replay.load_dataset(cache_dir=cache_dir, **kwargs)
  second = fixed_replay.load_dataset(cache_dir=cache_dir, **kwargs)
  assert plain.checkpoints == [(0, 30), (1, 30)] and plain.num_transitions == 60
  assert (first.cache_hits, second.cache_hits) == (0, 2)
  for a, b in zip(_all_transitions(plain), _all_transitions(second)):
    for name in a:
      np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# ---------------------------------------------------------------------------------------------------------
# load_dataset


def test_load_dataset_settings_and_layout(tmp_path):
  write_run(tmp_path, game="Pong", run=1, num_checkpoints=3, capacity=200)
  replay = fixed_replay.load_dataset(data_dir=str(tmp_path), game="Pong", run=1, setting="1pct",
                                     checkpoint_capacity=4000, allow_fewer=True)
  assert replay.checkpoints == [(0, 40), (1, 40), (2, 40)] and replay.num_rows == 120
  assert replay.setting == "1pct"
  with pytest.raises(DataError, match=r"setting '5pct' needs checkpoints 3-49 .*allow_fewer=True"):
    fixed_replay.load_dataset(data_dir=str(tmp_path), game="Pong", run=1, setting="5pct")
  logs = dqn_replay.replay_logs_dir(str(tmp_path), "Pong", 1)
  direct = fixed_replay.load_dataset(data_dir=logs, setting="all")
  assert direct.checkpoints == [(0, None), (1, None), (2, None)] and direct.num_rows == 600
  url = fixed_replay.load_dataset(data_dir="file://" + str(tmp_path), game="Pong", run=1, suffixes=[1],
                                  transitions_per_checkpoint=90)
  assert url.checkpoints == [(1, 90)]
  np.testing.assert_array_equal(url.valid_indices(0), [i for i in direct.valid_indices(1) if i <= 88])


def test_load_dataset_bad_input(tmp_path):
  gin.clear_config()  # a binding of load_dataset.data_dir left by an earlier test in this process would answer
  write_run(tmp_path, game="Pong", run=1, num_checkpoints=1, capacity=100)
  with pytest.raises(ConfigError, match=r"load_dataset.data_dir is not set"):
    fixed_replay.load_dataset(game="Pong")
  with pytest.raises(DataError, match=r"no replay folder .*Qbert/1/replay_logs \(expected the layout"):
    fixed_replay.load_dataset(data_dir=str(tmp_path), game="Qbert", run=1, setting="all")
  with pytest.raises(ConfigError, match=r"load_dataset.subset='random'"):
    fixed_replay.load_dataset(data_dir=str(tmp_path), game="Pong", setting="all", subset="random")
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "readme.txt").write_text("x")
  with pytest.raises(DataError, match=r"no complete checkpoint .* found: readme.txt"):
    fixed_replay.load_dataset(data_dir=str(empty), setting="all")


def test_load_dataset_through_gin(tmp_path):
  write_run(tmp_path, game="Pong", run=2, num_checkpoints=2, capacity=100)
  gin.clear_config()
  try:
    gin.parse_config([f"load_dataset.data_dir = '{tmp_path}'", "load_dataset.game = 'Pong'",
                      "load_dataset.run = 2", "load_dataset.setting = 'all'", "load_dataset.update_horizon = 3"])
    replay = fixed_replay.load_dataset()
  finally:
    gin.clear_config()
  assert replay.checkpoints == [(0, None), (1, None)] and replay.update_horizon == 3


@pytest.mark.parametrize("stack_size", [1, 3])
def test_other_stack_sizes_equal_dopamine(tmp_path, stack_size):
  buffer = write_dopamine_checkpoint(str(tmp_path), 0, capacity=80, episode_lengths=[6, 1, 20, 2],
                                     num_transitions=100, stack_size=stack_size, update_horizon=2)
  replay = fixed_replay.FixedReplay.from_checkpoints(str(tmp_path), [0], stack_size=stack_size, update_horizon=2)
  valid = replay.valid_indices(0)
  assert valid.tolist() == dopamine_valid_indices(buffer)
  ours = replay.get_transitions(0, valid)
  theirs = dopamine_batch(buffer, valid)
  assert ours["state"].shape == (len(valid), 84, 84, stack_size)
  for name in _COMPARED:
    np.testing.assert_allclose(ours[name], np.asarray(theirs[name]).astype(ours[name].dtype), rtol=1e-6,
                               err_msg=name)


def test_memory_bounded_swaps_read_the_cache(tmp_path):
  directory = write_run(tmp_path / "data", num_checkpoints=3, capacity=100, seed=12)
  cache_dir = str(tmp_path / "cache")
  full = fixed_replay.FixedReplay.from_checkpoints(directory, [0, 1, 2])
  warm = fixed_replay.FixedReplay.from_checkpoints(directory, [0, 1, 2], num_resident_checkpoints=1, seed=3,
                                                   cache_dir=cache_dir)
  visited = {tuple(warm.resident_positions)}
  for iteration in range(1, 12):
    warm.set_resident(iteration)
    visited.add(tuple(warm.resident_positions))
  assert visited == {(0,), (1,), (2,)}  # every checkpoint is now in the cache
  bounded = fixed_replay.FixedReplay.from_checkpoints(directory, [0, 1, 2], num_resident_checkpoints=1, seed=3,
                                                      cache_dir=cache_dir)
  assert bounded.cache_hits == 1 and bounded.frames.shape[0] == 100  # storage for one checkpoint only
  swaps = 0
  for iteration in range(1, 12):
    swaps += bounded.set_resident(iteration)
    (position,) = bounded.resident_positions
    valid = bounded.valid_indices(position)
    np.testing.assert_array_equal(valid, full.valid_indices(position))
    ours, want = bounded.get_transitions(position, valid), full.get_transitions(position, valid)
    for name in want:
      np.testing.assert_array_equal(ours[name], want[name], err_msg=name)
  assert swaps >= 2 and bounded.cache_hits == 1 + swaps  # every swap read the cache, none the .gz files


def test_dataset_actions_are_the_files_actions_at_the_valid_rows(tmp_path):
  """The public accessor other modules use (the Atari experiment checks actions against the game with it)."""
  directory = write_run(tmp_path, num_checkpoints=2, capacity=120, seed=5)
  replay = fixed_replay.FixedReplay.from_checkpoints(directory, [0, 1])
  want = np.concatenate([dqn_replay.load_checkpoint(directory, s)["action"][replay.valid_indices(p)]
                         for p, s in enumerate([0, 1])])
  np.testing.assert_array_equal(replay.dataset_actions(), want)


def test_rows_a_not_full_buffer_never_wrote_may_hold_nan(tmp_path):
  # Dopamine allocates with np.empty: a saved not-full buffer can hold NaN rewards past add_count. They belong to
  # no transition; NaN in a written row is still refused.
  directory = write_run(tmp_path, num_checkpoints=1, capacity=100, seed=9, final_partial=True, extra_steps=20)
  arrays = dqn_replay.load_checkpoint(directory, 1)
  written = int(arrays["add_count"])
  assert written < 100
  arrays["reward"][written:] = np.nan
  dqn_replay.save_checkpoint(directory, 1, arrays)
  replay = fixed_replay.FixedReplay.from_checkpoints(directory, [1])
  assert replay.valid_indices(0).max() < written and np.isfinite(
      replay.get_transitions(0, replay.valid_indices(0))["return_to_go"]).all()
  arrays["reward"][written - 1] = np.inf
  dqn_replay.save_checkpoint(directory, 1, arrays)
  with pytest.raises(DataError, match=r"reward_ckpt\.1\.gz: 1 reward\(s\) are NaN or inf \(first at row"):
    fixed_replay.FixedReplay.from_checkpoints(directory, [1])
