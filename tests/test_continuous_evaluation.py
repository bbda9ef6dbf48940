"""Continuous evaluation, one test per domain (locomotion, AntMaze, Adroit, Kitchen): the D4RL name -> gymnasium id
mapping, the observation in D4RL's layout (checked against the simulator's own state), a few steps whose return is
replayed by hand, and the normalized score; then the noisy evaluations."""
import gymnasium as gym
import gymnasium_robotics
import numpy as np
import pytest

from batch_rl_dr3 import reference_scores as scores
from batch_rl_dr3.continuous import evaluation
from batch_rl_dr3.errors import ConfigError

gym.register_envs(gymnasium_robotics)
STEPS = 5


def constant_policy(dim, value=0.1):
  return lambda obs: np.full(dim, value, np.float32)


def replayed_return(gym_id, kwargs, action, seed, steps=STEPS):
  env = gym.make(gym_id, **kwargs)
  env.reset(seed=seed)
  total = sum(float(env.step(action)[1]) for _ in range(steps))
  env.close()
  return total


def check_domain(task, gym_id, obs_dim, act_dim, kwargs=None):
  package, got_id, got_kwargs = evaluation.environment_id(task)
  assert (got_id, got_kwargs) == (gym_id, kwargs or {})
  seen = []
  metrics = evaluation.evaluate(task, constant_policy(act_dim), num_episodes=1, seed=7, observation_dim=obs_dim,
                                max_episode_steps=STEPS, visited=seen)
  assert len(seen) == STEPS and seen[0].shape == (obs_dim,)
  expected = replayed_return(gym_id, kwargs or {}, np.full(act_dim, 0.1, np.float32), seed=7)
  assert metrics["return"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
  low, high = scores.D4RL_REFERENCE_SCORES[task]
  assert metrics["normalized_score"] == pytest.approx(100 * (expected - low) / (high - low))
  return package


def test_locomotion():
  assert check_domain("hopper-medium-v2", "Hopper-v5", 11, 3) == "gymnasium"
  with pytest.raises(ConfigError, match="observes .*11.* but the dataset's observations have 17"):
    evaluation.make_environment("hopper-medium-v2", observation_dim=17)


def test_antmaze_observation_is_d4rls_qpos_qvel():
  check_domain("antmaze-umaze-v2", "AntMaze_UMaze-v4", 29, 8,
               {"continuing_task": False, "maze_map": evaluation.D4RL_ANTMAZE_EVAL_MAPS["umaze"]})
  env = evaluation.make_environment("antmaze-medium-diverse-v2", observation_dim=29)
  assert env.spec.max_episode_steps == 1000  # D4RL's antmaze-medium / large (umaze 700)
  observation, _ = env.reset(seed=3)
  ant = env.unwrapped.ant_env.data
  # D4RL's AntMaze observation is the ant's qpos (15, x and y first) ++ qvel (14).
  np.testing.assert_array_equal(evaluation.observation_adapter("antmaze-medium-diverse-v2")(observation),
                                np.concatenate([ant.qpos, ant.qvel]))
  env.close()


@pytest.mark.parametrize("hand,obs_dim,act_dim", [("pen", 45, 24), ("door", 39, 28), ("hammer", 46, 26),
                                                  ("relocate", 39, 30)])
def test_adroit(hand, obs_dim, act_dim):
  # D4RL's episode lengths (d4rl/hand_manipulation_suite MAX_STEPS): pen 100, the others 200.
  kwargs = {"max_episode_steps": 100} if hand == "pen" else None
  check_domain(f"{hand}-cloned-v1", f"AdroitHand{hand.capitalize()}-v1", obs_dim, act_dim, kwargs)
  env = evaluation.make_environment(f"{hand}-cloned-v1")
  assert env.spec.max_episode_steps == (100 if hand == "pen" else 200)
  env.close()


def test_kitchen_observation_in_d4rl_layout():
  subtasks = ["microwave", "kettle", "bottom burner", "light switch"]
  check_domain("kitchen-mixed-v0", "FrankaKitchen-v1", 60, 9, {"tasks_to_complete": subtasks})
  env = evaluation.make_environment("kitchen-mixed-v0", observation_dim=60)
  observation, _ = env.reset(seed=0)
  flat = evaluation.observation_adapter("kitchen-mixed-v0")(observation)
  qpos = env.unwrapped.robot_env.data.qpos
  # qpos of robot and objects (the env adds small observation noise), then the goal: microwave door at index 22,
  # kettle 23..29, bottom burner 11..12, light switch 17..18 of the 30-value qpos (D4RL's OBS_ELEMENT_GOALS).
  np.testing.assert_allclose(flat[:30], qpos, atol=5e-3)
  goal = flat[30:]
  assert goal[22] == -0.75 and goal[11] == -0.88 and goal[17] == -0.69
  np.testing.assert_allclose(goal[23:30], [-0.23, 0.75, 1.62, 0.99, 0.0, 0.0, -0.06])
  assert goal[19] == 0.0 and goal[20] == 0.0  # slide / hinge cabinet are not tasks of kitchen-mixed
  env.close()


class _RecordingEnv(gym.Env):
  """1-d observation 0.5, action box [-1, 1]^2; records the actions it receives; 100-step episodes."""

  observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
  action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

  def __init__(self):
    self.actions, self.t = [], 0

  def reset(self, seed=None, options=None):
    self.t = 0
    return np.full(4, 0.5, np.float32), {}

  def step(self, action):
    self.actions.append(np.asarray(action))
    self.t += 1
    return np.full(4, 0.5, np.float32), 0.0, False, self.t >= 100, {}


def test_noisy_evaluations_add_the_stated_noise():
  env, seen = _RecordingEnv(), []
  evaluation.rollout_returns(env, lambda obs: np.array([0.0, 0.95], np.float32), 20, seed=1, action_noise=0.2,
                             visited=seen)
  actions = np.stack(env.actions)
  assert np.all(actions <= 1.0) and np.all(actions >= -1.0)
  assert actions[:, 0].std() == pytest.approx(0.2, rel=0.05)  # 2000 draws: std error of the std ~1.6 %
  assert np.mean(actions[:, 1] == 1.0) == pytest.approx(0.4013, abs=0.04)  # P(0.95 + N(0, .2^2) > 1) = 0.401
  np.testing.assert_array_equal(np.stack(seen), 0.5)  # action noise leaves the observation alone

  env, seen = _RecordingEnv(), []
  evaluation.rollout_returns(env, lambda obs: np.zeros(2, np.float32), 20, seed=1, state_noise=0.05, visited=seen)
  noise = np.stack(seen) - 0.5
  assert noise.std() == pytest.approx(0.05, rel=0.05) and abs(noise.mean()) < 0.005
  np.testing.assert_array_equal(np.stack(env.actions), 0.0)

  env3, seen3 = _RecordingEnv(), []  # one standard deviation per dimension (IQL's standardised units)
  scale = np.array([0.05, 0.1, 0.0, 0.2])
  evaluation.rollout_returns(env3, lambda obs: np.zeros(2, np.float32), 20, seed=1, state_noise=scale, visited=seen3)
  np.testing.assert_allclose((np.stack(seen3) - 0.5).std(axis=0), scale, rtol=0.08)

  env2, seen2 = _RecordingEnv(), []
  evaluation.rollout_returns(env2, lambda obs: np.zeros(2, np.float32), 20, seed=1, state_noise=0.05, visited=seen2)
  np.testing.assert_array_equal(np.stack(seen2), np.stack(seen))  # seeded


def test_unknown_tasks_are_refused():
  with pytest.raises(ConfigError, match="kitchen-foo-v0.*unknown kitchen task"):
    evaluation.environment_id("kitchen-foo-v0")
  with pytest.raises(ConfigError, match="no evaluation environment known"):
    evaluation.environment_id("breakout")


@pytest.mark.parametrize("task,start,goal", [
    ("antmaze-umaze-diverse-v2", (1, 1), (3, 1)),  # D4RL's U_MAZE_TEST
    ("antmaze-medium-play-v2", (1, 1), (6, 6)),  # BIG_MAZE_TEST: D4RL's target (20, 20) from the start
    ("antmaze-large-diverse-v2", (1, 1), (7, 9))])  # HARDEST_MAZE_TEST: D4RL's target (32, 24)
def test_antmaze_starts_and_goals_are_d4rls_evaluation_cells(task, start, goal):
  env = evaluation.make_environment(task)
  maze = env.unwrapped.maze
  for seed in range(3):  # the same cells every episode, up to gymnasium-robotics' +-0.25 cell noise
    observation, _ = env.reset(seed=seed)
    np.testing.assert_allclose(observation["achieved_goal"], maze.cell_rowcol_to_xy(np.array(start)),
                               atol=0.25 * maze.maze_size_scaling)
    np.testing.assert_allclose(observation["desired_goal"], maze.cell_rowcol_to_xy(np.array(goal)),
                               atol=0.25 * maze.maze_size_scaling)
  env.close()
