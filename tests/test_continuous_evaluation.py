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
  # D4RL's data: gymnasium-robotics gets D4RL's map with its rows reversed (D4RL's walls, translated).
  check_domain("antmaze-umaze-v2", "AntMaze_UMaze-v4", 29, 8,
               {"continuing_task": False, "maze_map": evaluation.D4RL_ANTMAZE_EVAL_MAPS["umaze"][::-1]})
  env = evaluation.make_environment("antmaze-medium-diverse-v2", observation_dim=29)
  assert env.spec.max_episode_steps == 1000  # D4RL's antmaze-medium / large (umaze 700)
  observation, _ = env.reset(seed=3)
  ant = env.unwrapped.ant_env.data
  # D4RL's AntMaze observation is the ant's qpos (15, x and y first) ++ qvel (14), x and y relative to the centre of
  # D4RL's start cell: row 1, column 1 of BIG_MAZE_TEST (8 x 8), which is row 8 - 1 - 1 = 6 of the reversed map.
  start = env.unwrapped.maze.cell_rowcol_to_xy(np.array([6, 1]))
  np.testing.assert_allclose(start, [-10.0, -10.0])  # (1.5 * 4 - 16, 16 - 6.5 * 4)
  expected = np.concatenate([ant.qpos[:2] - start, ant.qpos[2:], ant.qvel])
  np.testing.assert_allclose(evaluation.observation_adapter("antmaze-medium-diverse-v2")(observation), expected,
                             rtol=0, atol=1e-12)
  env.close()
  # Minari's data were recorded in gymnasium-robotics' maze as drawn: D4RL's map unchanged, observation unchanged.
  assert evaluation.environment_id("antmaze-medium-play-v2", "gymnasium")[2]["maze_map"] == \
      evaluation.D4RL_ANTMAZE_EVAL_MAPS["medium"]
  env = evaluation.make_environment("antmaze-medium-play-v2", observation_dim=29, frame="gymnasium")
  observation, _ = env.reset(seed=3)
  ant = env.unwrapped.ant_env.data
  np.testing.assert_array_equal(evaluation.observation_adapter("antmaze-medium-play-v2", "gymnasium")(observation),
                                np.concatenate([ant.qpos, ant.qvel]))
  env.close()


# D4RL (maze_env.MazeEnv, maze_size_scaling 4): cell (i, j) is centred at (4 j - 4, 4 i - 4), the start cell (1, 1)
# at the origin; the evaluation goals: U_MAZE_TEST (3, 1) -> (0, 8), BIG_MAZE_TEST (6, 6) -> (20, 20),
# HARDEST_MAZE_TEST (7, 9) -> (32, 24). gymnasium-robotics on the reversed H x W map: cell (i, j) of D4RL is at
# ((j + 1/2) 4 - 2 W, (i + 1/2) 4 - 2 H): umaze 5 x 5, medium 8 x 8, large 9 x 12.
D4RL_CELLS = {"umaze": ((0, 0), (0, 8), (-4, -4), (-4, 4)),  # start, goal (D4RL xy), start, goal (env xy)
              "medium": ((0, 0), (20, 20), (-10, -10), (10, 10)),
              "large": ((0, 0), (32, 24), (-18, -12), (14, 12))}


@pytest.mark.parametrize("maze,task", [("umaze", "antmaze-umaze-v2"), ("medium", "antmaze-medium-play-v2"),
                                       ("large", "antmaze-large-diverse-v2")])
def test_antmaze_d4rl_frame_is_a_translation_of_the_env(maze, task):
  start, goal, env_start, env_goal = (np.array(v, np.float64) for v in D4RL_CELLS[maze])
  np.testing.assert_array_equal(evaluation.d4rl_to_env_xy(maze, start), env_start)
  np.testing.assert_array_equal(evaluation.d4rl_to_env_xy(maze, goal), env_goal)
  np.testing.assert_array_equal(evaluation.env_to_d4rl_xy(maze, env_start), start)
  np.testing.assert_array_equal(evaluation.env_to_d4rl_xy(maze, env_goal), goal)
  env = evaluation.make_environment(task, observation_dim=29)
  built = env.unwrapped.maze  # where gymnasium-robotics itself put the 'r' and 'g' cells of the map it was given
  np.testing.assert_array_equal(np.stack(built.unique_reset_locations), [env_start])
  np.testing.assert_array_equal(np.stack(built.unique_goal_locations), [env_goal])
  # The walls the simulator built are D4RL's blocks (maze_env.py: pos (4 j - 4, 4 i - 4) for every 1), translated:
  # the same maze, not its mirror image.
  model = env.unwrapped.model
  names = [model.geom(g).name for g in range(model.ngeom)]
  env_walls = sorted(map(tuple, np.round([model.geom_pos[g][:2] for g, n in enumerate(names)
                                           if n.startswith("block_")], 9)))
  rows = evaluation.D4RL_ANTMAZE_EVAL_MAPS[maze]
  d4rl_walls = [(4.0 * j - 4, 4.0 * i - 4) for i, row in enumerate(rows) for j, c in enumerate(row) if c == 1]
  assert env_walls == sorted(map(tuple, np.round(evaluation.d4rl_to_env_xy(maze, d4rl_walls), 9)))
  mirrored = [(x, -y) for x, y in d4rl_walls]  # the mirror image is not what was built (no maze is y-symmetric)
  assert env_walls != sorted(map(tuple, np.round(evaluation.d4rl_to_env_xy(maze, mirrored), 9)))
  env.close()


def test_antmaze_frame_follows_the_data_source():
  assert evaluation.antmaze_frame("minari:D4RL/antmaze/umaze-v1") == "gymnasium"
  for source in ("hdf5:/data/Ant_maze_u-maze.hdf5", "tfds:d4rl_antmaze/umaze-v2", "rlds:/data/umaze"):
    assert evaluation.antmaze_frame(source) == "d4rl"
  with pytest.raises(ConfigError, match="frame='mirror'.*expected one of"):
    evaluation.environment_id("antmaze-umaze-v2", "mirror")
  # One seeded episode in each frame: the same noise draws put the ant at the env's start cell, (-4, -4) with
  # the reversed map and (-4, 4) with the map as drawn, so D4RL's frame sees the gymnasium frame's first
  # observation moved by -(-4, 4) in x, y and identical in the 27 other values (a pure translation).
  # One seeded episode in each frame through evaluate(). D4RL's frame starts as D4RL's env does (ant.py reset_model:
  # qpos = init_qpos + U(-0.1, 0.1), init_qpos = torso at the origin, height 0.75, unit quaternion, joints 0);
  # gymnasium-robotics' starts within +-1 m of the start cell (-4, 4) with the ant's state exactly init_qpos.
  init_qpos = np.array([0.0, 0.0, 0.75, 1.0, 0.0, 0.0, 0.0] + [0.0] * 8)
  seen = {}
  for frame in evaluation.ANTMAZE_FRAMES:
    seen[frame] = []
    metrics = evaluation.evaluate("antmaze-umaze-v2", constant_policy(8), num_episodes=1, seed=5,
                                  observation_dim=29, max_episode_steps=STEPS, visited=seen[frame], frame=frame)
    assert len(seen[frame]) == STEPS and metrics["return"] == 0.0  # 5 steps cannot reach a goal 8 m away
  d4rl_noise = seen["d4rl"][0][:15] - init_qpos
  assert np.all(np.abs(d4rl_noise) <= 0.1) and np.all(d4rl_noise != 0.0)
  gym_first = seen["gymnasium"][0]
  assert np.all(np.abs(gym_first[:2] - [-4.0, 4.0]) <= 1.0)
  np.testing.assert_array_equal(gym_first[2:], np.r_[init_qpos[2:], np.zeros(14)])


def test_d4rl_antmaze_task_is_d4rls_start_goal_and_success():
  env = evaluation.make_environment("antmaze-umaze-v2", observation_dim=29)
  adapt = evaluation.observation_adapter("antmaze-umaze-v2")
  starts, goal_noise, velocities = [], [], []
  for seed in range(20):
    observation, _ = env.reset(seed=seed)
    flat = adapt(observation)
    starts.append(flat[:2])
    velocities.append(flat[15:])
    # D4RL's goal: the goal cell (0, 8) plus U(0, 1) + U(0, 0.5) in x and in y (maze_env.goal_sampler, s = 4)
    goal_noise.append(evaluation.env_to_d4rl_xy("umaze", env.goal) - [0.0, 8.0])
    np.testing.assert_array_equal(env.unwrapped.goal, env.goal)  # the env's target is D4RL's goal
  starts, goal_noise, velocities = np.stack(starts), np.stack(goal_noise), np.stack(velocities)
  assert np.all(np.abs(starts) <= 0.1)  # D4RL's start: the origin + U(-0.1, 0.1)
  assert np.all(goal_noise >= 0.0) and np.all(goal_noise <= 1.5)
  assert goal_noise.mean() == pytest.approx(0.75, abs=0.15)  # 40 draws, std of the mean 0.05
  assert velocities.std() == pytest.approx(0.1, rel=0.15)  # qvel = 0.1 N(0, 1): 280 draws
  # Success within D4RL's 0.5 m (the env's own criterion is 0.45 m): a goal 0.475 m from the ant.
  observation, _ = env.reset(seed=0)
  env.goal = observation["achieved_goal"] + np.array([0.475, 0.0])
  observation, reward, terminated, _, info = env.step(np.zeros(8, np.float32))
  distance = np.linalg.norm(observation["achieved_goal"] - env.goal)
  assert 0.45 < distance <= 0.5
  assert (reward, terminated, info["success"]) == (1.0, True, True)
  assert not env.unwrapped.compute_terminated(observation["achieved_goal"], env.goal, {})
  env.goal = observation["achieved_goal"] + np.array([0.0, 0.52])  # outside 0.5 m: no reward, no end
  _, reward, terminated, _, info = env.step(np.zeros(8, np.float32))
  assert (reward, terminated, info["success"]) == (0.0, False, False)
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
@pytest.mark.parametrize("frame", ["d4rl", "gymnasium"])
def test_antmaze_starts_and_goals_are_d4rls_evaluation_cells(task, start, goal, frame):
  env = evaluation.make_environment(task, frame=frame)
  maze = env.unwrapped.maze
  flip = (lambda cell: (maze.map_length - 1 - cell[0], cell[1])) if frame == "d4rl" else (lambda cell: cell)
  # the same cells every episode, up to the frame's noise: D4RL's (start +-0.1, goal + [0, 1.5]) or
  # gymnasium-robotics' (+-0.25 cell for both)
  start_range, goal_range = ((-0.1, 0.1), (0.0, 1.5)) if frame == "d4rl" else ((-1.0, 1.0), (-1.0, 1.0))
  for seed in range(3):
    observation, _ = env.reset(seed=seed)
    start_offset = observation["achieved_goal"] - maze.cell_rowcol_to_xy(np.array(flip(start)))
    goal_offset = observation["desired_goal"] - maze.cell_rowcol_to_xy(np.array(flip(goal)))
    assert np.all(start_offset >= start_range[0]) and np.all(start_offset <= start_range[1])
    assert np.all(goal_offset >= goal_range[0]) and np.all(goal_offset <= goal_range[1])
  env.close()
