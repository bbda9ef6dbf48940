"""collect(): DQN Replay checkpoints logged as batch_rl's logger did, read back with Dopamine's own buffer."""
import os
import subprocess
import sys

import numpy as np
import pytest

from batch_rl_dr3 import REPO_ROOT
from batch_rl_dr3.atari_env import AtariEnv
from batch_rl_dr3.data import dqn_replay
from batch_rl_dr3.data.collect import collect, epsilon_greedy, random_policy
from batch_rl_dr3.errors import ConfigError

ZERO_ROW = (np.zeros((84, 84), np.uint8), 0, 0.0, 0)


def scripted_policy(actions):
  calls = []

  def policy(states):
    assert states.shape == (1, 84, 84, 4) and states.dtype == np.uint8
    calls.append(1)
    return np.array([actions[len(calls) - 1]], np.int32)
  return policy


def expected_rows(game, seed, actions, num_transitions, max_steps_per_episode=27_000):
  """Rows a Dopamine DQN agent stores for these actions: 3 zero rows, then (obs, action, clipped r, end)."""
  env = AtariEnv(game, seed=seed, max_steps_per_episode=max_steps_per_episode)
  rows, raw_rewards, step = [], [], 0
  while step < num_transitions:
    rows += [ZERO_ROW] * 3
    observation = env.reset()
    while step < num_transitions:
      action = int(actions[step])
      next_observation, reward, terminal, truncated = env.step(action)
      raw_rewards.append(reward)
      rows.append((observation, action, float(np.clip(reward, -1, 1)), int(terminal or truncated)))
      step += 1
      if terminal or truncated:
        break
      observation = next_observation
  return rows, raw_rewards


def ring_after(rows, num_added, capacity):
  """The buffer's store after `num_added` rows: position p holds the newest row i < num_added, i % cap == p."""
  store = [ZERO_ROW] * capacity
  for i in range(num_added):
    store[i % capacity] = rows[i]
  return {"observation": np.stack([r[0] for r in store]), "action": np.array([r[1] for r in store], np.int32),
          "reward": np.array([r[2] for r in store], np.float32), "terminal": np.array([r[3] for r in store], np.uint8)}


def dopamine_load(directory, suffix, capacity):
  from dopamine.tf.replay_memory import circular_replay_buffer
  buffer = circular_replay_buffer.OutOfGraphReplayBuffer(
      observation_shape=(84, 84), stack_size=4, replay_capacity=capacity, batch_size=8)
  buffer.load(directory, suffix)
  return buffer


def check_checkpoints(replay_logs, rows, capacity, logged_add_counts):
  """Each checkpoint equals the ring buffer at its add_count, as Dopamine's own `load` reads it."""
  from dopamine.tf.replay_memory.circular_replay_buffer import invalid_range
  assert dqn_replay.list_checkpoints(replay_logs) == list(range(len(logged_add_counts)))
  for suffix, (rows_added, stored_add_count) in enumerate(logged_add_counts):
    buffer = dopamine_load(replay_logs, suffix, capacity)
    expected = ring_after(rows, rows_added, capacity)
    for name, array in expected.items():
      np.testing.assert_array_equal(buffer._store[name], array, err_msg=f"{name} of checkpoint {suffix}")  # pylint: disable=protected-access
    assert int(buffer.add_count) == stored_add_count
    np.testing.assert_array_equal(buffer.invalid_range, invalid_range(rows_added % capacity, capacity, 4, 1))
    ours = dqn_replay.load_checkpoint(replay_logs, suffix)
    np.testing.assert_array_equal(ours["observation"], expected["observation"])
    assert int(ours["add_count"]) == stored_add_count


def test_collect_2500_pong_transitions_into_three_checkpoints(tmp_path):
  capacity, seed, num_transitions = 1000, 0, 2500
  actions = np.random.default_rng(42).integers(6, size=num_transitions)
  result = collect("pong", num_transitions, str(tmp_path), capacity=capacity, seed=seed,
                   policy=scripted_policy(actions), progress=False)
  replay_logs = os.path.join(str(tmp_path), "Pong", "1", "replay_logs")
  assert result.replay_logs == replay_logs and result.suffixes == [0, 1, 2]
  assert sorted(os.listdir(os.path.dirname(replay_logs))) == ["replay_logs"]  # no staging folder left
  assert len(os.listdir(replay_logs)) == 18  # exactly the 6 files of the dataset per checkpoint

  rows, raw_rewards = expected_rows("Pong", seed, actions, num_transitions)
  total = len(rows)
  assert result.add_count == total and result.num_transitions == num_transitions
  assert total - num_transitions == 3 * result.num_episodes  # 3 padding rows per episode
  # batch_rl's logger: checkpoints at add_count 999 and 1999, then the final partial one with add_count = cursor.
  check_checkpoints(replay_logs, rows, capacity, [(999, 999), (1999, 1999), (total, total % capacity)])
  finished = [i for i, r in enumerate(rows) if r[3]]
  assert len(result.returns) == len(finished) >= 1
  assert result.returns[0] == pytest.approx(sum(raw_rewards[:finished[0] - 2]))

  # Episode starts are preceded by 3 zero rows, in the files as Dopamine reads them.
  buffer = dopamine_load(replay_logs, 0, capacity)
  store = buffer._store  # pylint: disable=protected-access
  assert not store["observation"][:3].any() and store["observation"][3].any()
  for end in np.flatnonzero(store["terminal"][:996]):
    assert not store["observation"][end + 1:end + 4].any() and not store["action"][end + 1:end + 4].any()
    assert store["observation"][end + 4].any()
  batch = buffer.sample_transition_batch(batch_size=8)
  assert batch[0].shape == (8, 84, 84, 4) and batch[1].dtype == np.int32


def test_rewards_clipped_truncation_terminal_and_no_checkpoint_lost_in_padding(tmp_path):
  # 40-step episodes (cut by the cap) add 43 rows each; with capacity 46 the logging point add_count = 45
  # falls inside the padding of episode 2, which batch_rl's once-per-add() test would skip.
  capacity, seed, num_transitions, cap = 46, 4, 120, 40
  actions = np.full(num_transitions, 4)  # RIGHTFIRE: SpaceInvaders scores 5 points within 40 steps
  result = collect("SpaceInvaders", num_transitions, str(tmp_path), run=3, capacity=capacity, seed=seed,
                   policy=scripted_policy(actions), max_steps_per_episode=cap, progress=False)
  rows, raw_rewards = expected_rows("SpaceInvaders", seed, actions, num_transitions, max_steps_per_episode=cap)
  assert len(rows) == 129 and result.add_count == 129 and result.suffixes == [0, 1, 2]
  check_checkpoints(result.replay_logs, rows, capacity, [(45, 45), (91, 91), (129, 129 % capacity)])
  # add_count after each add() call (padding + first row of an episode come in one call): batch_rl's logger
  # would never see 45, and its first checkpoint would be the one at 91.
  after_each_add = np.cumsum([4 if i % cap == 0 else 1 for i in range(num_transitions)])
  assert 45 not in after_each_add and 91 in after_each_add
  assert max(raw_rewards) > 1
  assert [r[3] for r in rows if r[0].any()] == ([0] * (cap - 1) + [1]) * 3  # terminal stored at the cut
  stored_rewards = np.concatenate([dqn_replay.load_checkpoint(result.replay_logs, s)["reward"] for s in (0, 1, 2)])
  assert set(np.unique(stored_rewards)) <= {-1.0, 0.0, 1.0} and stored_rewards.max() == 1.0
  assert result.returns == pytest.approx([sum(raw_rewards[i:i + cap]) for i in (0, cap, 2 * cap)])


def test_refuses_to_mix_collections_and_cleans_staging_leftovers(tmp_path):
  run_dir = tmp_path / "Pong" / "1"
  leftover = run_dir / ".replay_logs.partial-0-deadbeef"
  leftover.mkdir(parents=True)
  (leftover / "add_count_ckpt.0.gz").write_bytes(b"\x1f\x8b")
  collect("Pong", 20, str(tmp_path), capacity=8, progress=False)
  assert sorted(os.listdir(run_dir)) == ["replay_logs"]
  with pytest.raises(ConfigError, match="already holds checkpoints"):
    collect("Pong", 20, str(tmp_path), capacity=8, progress=False)
  with pytest.raises(ConfigError, match="capacity"):
    collect("Pong", 20, str(tmp_path / "other"), capacity=4, progress=False)
  with pytest.raises(ConfigError, match="'Pongg'"):
    collect("Pongg", 20, str(tmp_path / "other"), progress=False)


def test_command_line_writes_the_dataset_layout(tmp_path):
  command = [sys.executable, "-m", "batch_rl_dr3.data.collect", "--game=pong", "--num_transitions=150",
             "--capacity=60", f"--out={tmp_path}", "--run=2", "--seed=1"]
  done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  replay_logs = os.path.join(str(tmp_path), "Pong", "2", "replay_logs")
  assert "Wrote checkpoints [0, 1, 2] (150 transitions, 1 episodes" in done.stdout
  assert "checkpoint 1 written (add_count 119)" in done.stdout
  assert dqn_replay.list_checkpoints(replay_logs) == [0, 1, 2]
  final = dqn_replay.load_checkpoint(replay_logs, 2)
  assert int(final["add_count"]) == 153 % 60
  # The default random policy: uniform over Pong's 6 actions, from its own seeded generator.
  stored = np.concatenate([dqn_replay.load_checkpoint(replay_logs, 1)["action"][:59], final["action"][:33]])
  assert stored.min() >= 0 and stored.max() <= 5 and len(np.unique(stored)) == 6


def test_epsilon_greedy_mixes_uniform_and_greedy_actions():
  greedy_calls = []

  def greedy(states):
    greedy_calls.append(len(states))
    return np.full(len(states), 2, np.int32)

  states = np.zeros((20_000, 1, 1, 4), np.uint8)
  actions = epsilon_greedy(greedy, 4, 0.3, seed=0)(states)
  # P(action != greedy) = epsilon * (1 - 1/4) = 0.225; binomial std over 20,000 rows is 0.003.
  assert abs(np.mean(actions != 2) - 0.225) < 0.015
  assert np.array_equal(epsilon_greedy(greedy, 4, 0.0)(states[:50]), np.full(50, 2))
  greedy_calls.clear()
  uniform = epsilon_greedy(greedy, 4, 1.0)(states)
  assert not greedy_calls and abs(np.mean(uniform == 2) - 0.25) < 0.015
  assert np.bincount(random_policy(6, seed=1)(states), minlength=6).min() > 3000
  with pytest.raises(ConfigError, match="epsilon"):
    epsilon_greedy(greedy, 4, 1.5)


# ---------------------------------------------------------------------------------------------------------
# --policy=dqn: a DQN that learns from the replay it logs


def _files(replay_logs):
  return {name: open(os.path.join(replay_logs, name), "rb").read() for name in sorted(os.listdir(replay_logs))}


def _learning_collect(out, seed):
  from batch_rl_dr3.data.collect import LearningDQN
  learner = LearningDQN(4, seed=seed, learning_starts=30, update_period=2, target_update_period=20,
                        epsilon_decay_steps=40, batch_size=4)
  before = learner.parameters()
  result = collect("Breakout", 130, str(out), capacity=50, learner=learner, seed=seed, progress=False)
  return learner, before, result


def test_learning_dqn_logs_loadable_checkpoints_learns_and_is_reproducible(tmp_path):
  learner, before, result = _learning_collect(tmp_path / "a", seed=0)
  # Dopamine's schedule: a gradient step every 2nd agent step once add_count > 30 (3 padding rows per episode
  # count in add_count), so about (130 - 30) / 2 steps; epsilon has decayed to epsilon_train.
  assert 45 <= learner.gradient_steps <= 52 and learner.training_steps == 130
  assert learner.epsilon() == pytest.approx(0.01)
  after = learner.parameters()
  assert any(np.abs(a - b).max() > 1e-6 for a, b in zip(after, before)), "the policy never learned"
  # The checkpoints are the dataset format: Dopamine's buffer and ours read the same arrays.
  assert result.suffixes == [0, 1, 2]
  for suffix in result.suffixes:
    ours = dqn_replay.load_checkpoint(result.replay_logs, suffix)
    buffer = dopamine_load(result.replay_logs, suffix, 50)
    for name in ("observation", "action", "reward", "terminal"):
      np.testing.assert_array_equal(ours[name], buffer._store[name])  # pylint: disable=protected-access
    assert int(ours["add_count"]) == int(buffer.add_count)
    assert ours["action"].max() <= 3
  batch = dopamine_load(result.replay_logs, 1, 50).sample_transition_batch(batch_size=4)
  assert batch[0].shape == (4, 84, 84, 4)
  # Same seed: the same files byte for byte; another seed: other actions.
  _, _, again = _learning_collect(tmp_path / "b", seed=0)
  assert _files(again.replay_logs) == _files(result.replay_logs)
  _, _, other = _learning_collect(tmp_path / "c", seed=1)
  assert not np.array_equal(dqn_replay.load_checkpoint(other.replay_logs, 1)["action"],
                            dqn_replay.load_checkpoint(result.replay_logs, 1)["action"])


def test_linearly_decaying_epsilon_is_dopamines():
  from batch_rl_dr3.data.collect import linearly_decaying_epsilon
  # Dopamine: epsilon + clip((1 - epsilon) * (decay + warmup - step) / decay, 0, 1 - epsilon)
  assert linearly_decaying_epsilon(100, 0, 50, 0.01) == pytest.approx(1.0)
  assert linearly_decaying_epsilon(100, 50, 50, 0.01) == pytest.approx(1.0)
  assert linearly_decaying_epsilon(100, 100, 50, 0.01) == pytest.approx(0.01 + 0.99 * 0.5)
  assert linearly_decaying_epsilon(100, 150, 50, 0.01) == pytest.approx(0.01)
  assert linearly_decaying_epsilon(100, 10**6, 50, 0.01) == pytest.approx(0.01)
