"""AtariEnv against a hand-driven ALE: Dopamine's frames, rewards, sticky actions, episode ends, ROMs."""
import os
import shutil

import cv2
import numpy as np
import pytest

from batch_rl_dr3 import atari_env
from batch_rl_dr3.atari_env import AtariEnv, FrameStack
from batch_rl_dr3.errors import ConfigError


class HandPreprocessing:
  """Dopamine's protocol by hand on gymnasium's ALE env (`ALE/<Game>-v5` with frameskip=1, reset(seed))."""

  def __init__(self, rom_id, seed, sticky=0.25):
    from ale_py.env import AtariEnv as GymnasiumAtariEnv
    self.env = GymnasiumAtariEnv(game=rom_id, frameskip=1, repeat_action_probability=sticky,
                                 full_action_space=False)
    self.env.reset(seed=seed)
    self.ale = self.env.ale

  def screen(self):
    return self.ale.getScreenGrayscale()

  @staticmethod
  def resize(frame):
    return cv2.resize(frame, (84, 84), interpolation=cv2.INTER_AREA)

  def reset(self):
    self.ale.reset_game()
    return self.resize(self.screen())

  def step(self, action):
    ale_action = self.env._action_set[action]  # pylint: disable=protected-access
    reward, last_two = 0, []
    for frame in range(4):
      reward += self.ale.act(ale_action)
      if frame >= 2:
        last_two.append(self.screen())
      if self.ale.game_over():
        return None, reward, True  # Dopamine stops the skip here; that frame is not used for learning
    return self.resize(np.maximum(last_two[0], last_two[1])), reward, False


def test_ale_seed_is_gymnasiums_when_it_fits_in_31_bits():
  # gymnasium's AtariEnv.seed_game: the second SeedSequence word, as int32. ale-py's vector env takes seeds >= 0.
  for seed in range(40):
    word = int(np.random.SeedSequence(seed).generate_state(n_words=2)[1])
    gymnasium_seed = word - 2 ** 32 if word >= 2 ** 31 else word
    assert atari_env.ale_seed(seed) == (gymnasium_seed if gymnasium_seed >= 0 else word - 2 ** 31)
    assert 0 <= atari_env.ale_seed(seed) < 2 ** 31
  assert atari_env.ale_seed(4) == 1819501355 and atari_env.ale_seed(0) == 1529665511  # -617818137 + 2**31


# Seeds whose gymnasium seed word is below 2**31 (4, 6, 8, 11): there our seeding is gymnasium's.
@pytest.mark.parametrize("game,rom_id,seed", [("Pong", "pong", 4), ("SpaceInvaders", "space_invaders", 11)])
def test_frames_and_rewards_equal_a_hand_driven_ale(game, rom_id, seed):
  env = AtariEnv(game, seed=seed)
  hand = HandPreprocessing(rom_id, seed)
  rng = np.random.default_rng(seed)
  first = env.reset()
  assert first.dtype == np.uint8 and first.shape == (84, 84)
  np.testing.assert_array_equal(first, hand.reset())
  largest_reward = 0.0
  for _ in range(150):
    action = int(rng.integers(env.num_actions))
    observation, reward, terminal, truncated = env.step(action)
    expected, expected_reward, game_over = hand.step(action)
    assert (reward, terminal, truncated) == (expected_reward, game_over, False)
    np.testing.assert_array_equal(observation, expected)
    largest_reward = max(largest_reward, abs(reward))
  if game == "SpaceInvaders":
    assert largest_reward > 1  # rewards are the game's points, unclipped


def test_whole_episode_ends_at_game_over_not_at_life_loss():
  env = AtariEnv("Breakout", seed=6)
  hand = HandPreprocessing("breakout", 6)
  rng = np.random.default_rng(0)
  env.reset()
  hand.reset()
  lives = [env.lives]
  terminal = False
  while not terminal:
    action = int(rng.integers(env.num_actions))
    observation, reward, terminal, truncated = env.step(action)
    expected, expected_reward, game_over = hand.step(action)
    assert (reward, terminal, truncated) == (expected_reward, game_over, False)
    if not terminal:
      np.testing.assert_array_equal(observation, expected)
    lives.append(env.lives)
  # Lives were lost during the episode without a terminal; the terminal came with the last one.
  assert lives[0] == 5 and lives[-1] == 0
  assert min(lives[:-1]) < 5 and min(lives[:-1]) > 0
  assert env.episode_steps == len(lives) - 1
  with pytest.raises(RuntimeError, match="reset"):
    env.step(0)
  env.reset()
  assert env.episode_steps == 0 and env.lives == 5


def test_sticky_actions_are_set_in_the_ale_and_change_the_game():
  sticky = AtariEnv("Pong", seed=1)
  assert sticky.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
  plain = AtariEnv("Pong", seed=1, sticky_action_prob=0.0)
  assert plain.ale.getFloat("repeat_action_probability") == 0.0
  sticky.reset()
  plain.reset()
  differ = False
  for t in range(80):
    action = 2 + (t // 3) % 2  # alternate RIGHT/LEFT every 3 steps: repeats show in the paddle position
    differ |= not np.array_equal(sticky.step(action)[0], plain.step(action)[0])
  assert differ


def test_same_seed_same_frames_other_seed_other_frames():
  def play(seed):
    env = AtariEnv("Pong", seed=seed)
    frames = [env.reset()]
    for t in range(60):
      frames.append(env.step(2 + (t // 2) % 2)[0])
    return np.stack(frames)
  np.testing.assert_array_equal(play(7), play(7))
  assert not np.array_equal(play(7), play(8))


def test_episode_cap_truncates_at_max_steps():
  env = AtariEnv("Pong", seed=0, max_steps_per_episode=10)
  env.reset()
  for step in range(1, 11):
    _, _, terminal, truncated = env.step(0)
    assert not terminal
    assert truncated == (step == 10)
  assert env.episode_steps == 10
  with pytest.raises(RuntimeError):
    env.step(0)
  env.reset()
  assert not env.step(0)[3]


def test_minimal_action_sets():
  from ale_py.env import AtariEnv as GymnasiumAtariEnv
  for game, rom_id, count in [("Pong", "pong", 6), ("Breakout", "breakout", 4), ("MsPacman", "ms_pacman", 9),
                              ("Seaquest", "seaquest", 18)]:
    assert atari_env.num_actions_for_game(game) == count
    assert GymnasiumAtariEnv(game=rom_id).action_space.n == count
  assert atari_env.minimal_action_set("Breakout") == (0, 1, 3, 4)  # NOOP, FIRE, RIGHT, LEFT


def test_bad_inputs_get_clear_errors(tmp_path):
  with pytest.raises(ConfigError, match="'Pongg'.*'Pong'"):
    AtariEnv("Pongg")
  with pytest.raises(ConfigError, match="pong.bin"):
    AtariEnv("Pong", rom_dir=str(tmp_path))
  with pytest.raises(ConfigError, match="sticky_action_prob"):
    AtariEnv("Pong", sticky_action_prob=1.5)
  env = AtariEnv("Pong")
  env.reset()
  with pytest.raises(ValueError, match="action 6 out of range"):
    env.step(6)


def test_rom_dir_is_used(tmp_path):
  from ale_py import roms
  shutil.copy(roms.get_rom_path("pong"), tmp_path / "pong.bin")
  env = AtariEnv("pong", seed=2, rom_dir=str(tmp_path))
  assert env.rom_path == os.path.join(str(tmp_path), "pong.bin")
  reference = AtariEnv("Pong", seed=2)
  np.testing.assert_array_equal(env.reset(), reference.reset())
  for t in range(20):
    np.testing.assert_array_equal(env.step(t % 6)[0], reference.step(t % 6)[0])


def test_frame_stack_is_dopamines_agent_state():
  frames = [np.full((84, 84), value, np.uint8) for value in (10, 20, 30, 40, 50)]
  stack = FrameStack()
  state = stack.reset(frames[0])
  assert state.shape == (84, 84, 4) and state.dtype == np.uint8
  assert state[0, 0].tolist() == [0, 0, 0, 10]
  for frame in frames[1:]:
    state = stack.push(frame)
  assert state[5, 7].tolist() == [20, 30, 40, 50]
  state[...] = 0  # a copy: the stack is unchanged
  assert stack.state[0, 0].tolist() == [20, 30, 40, 50]
  assert stack.reset()[0, 0].tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("game,seeds,cap", [("Breakout", [0, 3, 4], 120), ("SpaceInvaders", [7, 8], None)])
def test_batched_env_plays_each_game_as_atari_env_with_its_seed(game, seeds, cap):
  """ale-py's C++ vector env, set up as Dopamine's protocol: frames, rewards and episode ends of AtariEnv + FrameStack,
  through game overs, the step cap and the resets that follow, for seeds of either sign of gymnasium's word."""
  batched = atari_env.BatchedAtariEnv(game, len(seeds), max_steps_per_episode=cap, num_threads=2)
  batched.reset([s + 1 for s in seeds])
  batched.step(np.zeros(len(seeds), np.int32))  # a reset with new seeds starts over, as a fresh game would
  singles = [AtariEnv(game, seed=s, max_steps_per_episode=cap) for s in seeds]
  stacks = [FrameStack() for _ in seeds]
  states = batched.reset(seeds)
  assert states.shape == (len(seeds), 84, 84, 4) and states.dtype == np.uint8
  expected = np.stack([stack.reset(env.reset()) for env, stack in zip(singles, stacks)])
  np.testing.assert_array_equal(states, expected)
  rng = np.random.default_rng(1)
  ends, truncations, largest_reward = 0, 0, 0.0
  for t in range(700):
    actions = rng.integers(batched.num_actions, size=len(seeds))
    states, rewards, terminal, truncated = batched.step(actions)
    for i, (env, stack) in enumerate(zip(singles, stacks)):
      observation, reward, env_terminal, env_truncated = env.step(int(actions[i]))
      assert (rewards[i], terminal[i], truncated[i]) == (reward, env_terminal, env_truncated), (t, i)
      largest_reward = max(largest_reward, reward)
      if env_terminal or env_truncated:
        ends += 1
        truncations += env_truncated
        expected[i] = stack.reset(env.reset())
      else:
        expected[i] = stack.push(observation)
    np.testing.assert_array_equal(states, expected, err_msg=f"step {t}")
  assert ends >= 3  # game overs (and, with a cap, truncations) were crossed
  if cap is not None:
    assert truncations >= 1
  if game == "SpaceInvaders":
    assert largest_reward > 1  # unclipped
