"""Policy rollouts for the continuous tasks: gymnasium MuJoCo for D4RL locomotion, gymnasium-robotics for
AntMaze, Adroit and Kitchen, roboverse for COG when it is installed. Training never needs an environment.

D4RL's locomotion data were logged in gym's mujoco-py v2/v3 environments; gymnasium's v5 environments keep the
same observation layout (HalfCheetah 17, Hopper 11, Walker2d 17; Ant 27 with contact forces left out), which
`make_environment` checks against the dataset before any rollout. gymnasium-robotics' environments observe dicts;
`observation_adapter` turns them into D4RL's vectors: AntMaze (x, y) ++ the ant's 27 values (29, D4RL's layout),
Kitchen robot qpos (9) ++ object qpos (21) ++ D4RL's 30-value goal of the task's 4 sub-tasks (60). Adroit's
AdroitHand*-v1 observe D4RL's vectors (pen 45, door 39, hammer 46, relocate 39); their door / hammer / relocate
rewards were changed in gymnasium-robotics 1.2.1 without a version bump, so the returns there (and the normalized
scores computed from D4RL's reference returns) are not exactly D4RL's (see the README). AntMaze runs from D4RL's
start cell to D4RL's goal cell in the frame of the data (`ANTMAZE_FRAMES`, chosen by the data source): Minari's
data were recorded in gymnasium-robotics' maze as its maps draw it (centred, row 0 at the top, y up the rows), so
they are evaluated there unchanged; D4RL's own files (hdf5 / TFDS / RLDS) were recorded in D4RL's maze_env (origin
at the start cell, y = maze_size_scaling * row: y down the rows), which is the mirror image in y of the former. A
mirror is no proper motion (it would flip the yaw and swap the ant's left and right legs), so for D4RL data the
maze is not mirrored back in the observation: gymnasium-robotics is given D4RL's map with its rows reversed, which
builds exactly D4RL's walls up to a translation, and the policy sees the torso's (x, y) minus that translation
(`antmaze_d4rl_offset`); height, orientation, joints and all velocities are invariant under a translation.
In that frame the task is also D4RL's (`D4RLAntMazeTask`): D4RL's start and goal noise and its 0.5 m success radius.

Noisy evaluations (Tarasov et al. 2024, reference §4): `action_noise` sigma adds N(0, sigma^2) to the policy's action
before clipping to the action box, `state_noise` sigma adds N(0, sigma^2) to what the policy observes (the
environment itself is untouched); both drawn from a generator seeded by the evaluation seed.
"""
import importlib
from typing import Callable, Dict, List, Optional

import numpy as np

from batch_rl_dr3 import reference_scores as scores
from batch_rl_dr3.data import minari as minari_data
from batch_rl_dr3.errors import ConfigError
from batch_rl_dr3.progress import Progress

# D4RL env prefix -> (gymnasium id, constructor kwargs).
GYMNASIUM_MUJOCO = {
    "halfcheetah": ("HalfCheetah-v5", {}),
    "hopper": ("Hopper-v5", {}),
    "walker2d": ("Walker2d-v5", {}),
    "ant": ("Ant-v5", {"include_cfrc_ext_in_observation": False}),
}
# D4RL's AntMaze evaluation: one start cell 'r' and one goal cell 'g' per maze (D4RL locomotion/maze_env.py
# U_MAZE_TEST, BIG_MAZE_TEST, HARDEST_MAZE_TEST, used by every antmaze-*-v2 task, 'diverse' and 'play' alike), given
# to gymnasium-robotics' AntMaze_<maze>-v4 as its maze_map (its own maps draw start and goal at random).
_R, _G = "r", "g"
D4RL_ANTMAZE_EVAL_MAPS = {
    "umaze": [[1, 1, 1, 1, 1], [1, _R, 0, 0, 1], [1, 1, 1, 0, 1], [1, _G, 0, 0, 1], [1, 1, 1, 1, 1]],
    "medium": [[1, 1, 1, 1, 1, 1, 1, 1], [1, _R, 0, 1, 1, 0, 0, 1], [1, 0, 0, 1, 0, 0, 0, 1],
               [1, 1, 0, 0, 0, 1, 1, 1], [1, 0, 0, 1, 0, 0, 0, 1], [1, 0, 1, 0, 0, 1, 0, 1],
               [1, 0, 0, 0, 1, 0, _G, 1], [1, 1, 1, 1, 1, 1, 1, 1]],
    "large": [[1] * 12, [1, _R, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1], [1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1],
              [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1], [1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1],
              [1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1], [1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1],
              [1, 0, 0, 1, 0, 0, 0, 1, 0, _G, 0, 1], [1] * 12],
}
_ANTMAZE_IDS = {"umaze": "AntMaze_UMaze-v4", "medium": "AntMaze_Medium-v4", "large": "AntMaze_Large-v4"}
# D4RL's antmaze-* registrations (d4rl/locomotion/__init__.py) build the maze with maze_size_scaling=4.0, the
# default of gymnasium-robotics' AntMaze_*-v4 too.
ANTMAZE_SIZE_SCALING = 4.0
# The coordinate frame of AntMaze observations: 'd4rl' (D4RL's maze_env; D4RL's hdf5 / TFDS / RLDS data) or
# 'gymnasium' (gymnasium-robotics' maze as its maps draw it; Minari's D4RL/antmaze/* data). Module docstring.
ANTMAZE_FRAMES = ("d4rl", "gymnasium")
ADROIT_IDS = {"pen": "AdroitHandPen-v1", "door": "AdroitHandDoor-v1", "hammer": "AdroitHandHammer-v1",
              "relocate": "AdroitHandRelocate-v1"}
# D4RL's Adroit v1 episodes last 100 steps for pen and 200 for the others (d4rl/hand_manipulation_suite MAX_STEPS),
# and its reference returns were measured so; gymnasium-robotics' AdroitHandPen-v1 defaults to 200 steps.
ADROIT_KWARGS = {"pen": {"max_episode_steps": 100}}
# D4RL kitchen task -> the sub-tasks of its environment (D4RL's KitchenMicrowaveKettleLightSliderV0 for complete and
# partial, KitchenMicrowaveKettleBottomBurnerLightV0 for mixed).
KITCHEN_SUBTASKS = {
    "kitchen-complete-v0": ("microwave", "kettle", "light switch", "slide cabinet"),
    "kitchen-partial-v0": ("microwave", "kettle", "light switch", "slide cabinet"),
    "kitchen-mixed-v0": ("microwave", "kettle", "bottom burner", "light switch"),
}
COG_ENVIRONMENTS = {"pickplace": "Widow250PickTray-v0", "drawer": "Widow250DoubleDrawerOpenGraspNeutral-v0"}


def _require(module: str, task: str, purpose: str):
  try:
    return importlib.import_module(module)
  except ImportError:
    raise ConfigError(f"evaluation of task={task!r} needs the '{module}' package ({purpose}), which is not "
                      f"installed; install it, or turn evaluation off with "
                      f"ContinuousExperiment.eval_episodes=0") from None


def antmaze_frame(source: str) -> str:
  """The frame of a dataset's AntMaze observations from its source description (the loaders' second value):
  'gymnasium' for Minari's (recorded in gymnasium-robotics), 'd4rl' for D4RL's own hdf5 / TFDS / RLDS files."""
  return "gymnasium" if str(source).startswith("minari:") else "d4rl"


def _check_frame(frame: str) -> None:
  if frame not in ANTMAZE_FRAMES:
    raise ConfigError(f"AntMaze frame={frame!r}: expected one of {ANTMAZE_FRAMES}")


def antmaze_maze(task: str) -> str:
  """'umaze' / 'medium' / 'large' of a D4RL antmaze task name."""
  maze = task[len("antmaze-"):].rsplit("-v", 1)[0].split("-")[0]  # umaze(-diverse), medium-play, ...
  if maze not in _ANTMAZE_IDS:
    raise ConfigError(f"task={task!r}: unknown AntMaze maze; expected antmaze-{{umaze,medium,large}}-...")
  return maze


def antmaze_env_map(maze: str, frame: str = "d4rl"):
  """The maze_map given to gymnasium-robotics: D4RL's evaluation map, rows reversed for the 'd4rl' frame.

  gymnasium-robotics (maze_v4.Maze.cell_rowcol_to_xy) puts cell (i, j) of its map at x = (j + 1/2) s - W s / 2,
  y = H s / 2 - (i + 1/2) s (H rows, W columns, s = ANTMAZE_SIZE_SCALING); D4RL (maze_env.MazeEnv) puts cell (i, j)
  at x = j s - x0, y = i s - y0, (x0, y0) = s * (column, row) of its start cell 'r'. Fed row H - 1 - i where D4RL
  has row i, gymnasium-robotics places that cell at y = (i + 1/2) s - H s / 2: D4RL's y plus a constant, so the walls
  are D4RL's walls translated by `antmaze_d4rl_offset(maze)`.
  """
  _check_frame(frame)
  rows = D4RL_ANTMAZE_EVAL_MAPS[maze]
  return [list(row) for row in (rows[::-1] if frame == "d4rl" else rows)]


def antmaze_d4rl_offset(maze: str) -> np.ndarray:
  """env (x, y) - D4RL (x, y) of the same point, in the env built from `antmaze_env_map(maze, 'd4rl')`: the env's
  position of D4RL's origin (the centre of the start cell). umaze (-4, -4), medium (-10, -10), large (-18, -12)."""
  rows, s = D4RL_ANTMAZE_EVAL_MAPS[maze], ANTMAZE_SIZE_SCALING
  i, j = next((i, j) for i, row in enumerate(rows) for j, cell in enumerate(row) if cell == _R)
  return np.array([(j + 0.5) * s - len(rows[0]) * s / 2, (i + 0.5) * s - len(rows) * s / 2])


def d4rl_to_env_xy(maze: str, xy) -> np.ndarray:
  """D4RL (x, y) -> the (x, y) of the same point in the 'd4rl'-frame evaluation env."""
  return np.asarray(xy, np.float64) + antmaze_d4rl_offset(maze)


def env_to_d4rl_xy(maze: str, xy) -> np.ndarray:
  """(x, y) in the 'd4rl'-frame evaluation env -> D4RL's (x, y) of the same point."""
  return np.asarray(xy, np.float64) - antmaze_d4rl_offset(maze)


# D4RL's AntMaze task (d4rl/locomotion): the ant starts at the start cell's centre with the ant's reset noise
# (ant.py reset_model: qpos + U(-0.1, 0.1), qvel + 0.1 N(0, 1)), the goal is the goal cell's centre plus
# U(0, s/4) + U(0, s/8) in x and in y (maze_env.goal_sampler: _rowcol_to_xy(add_random_noise=True), then random_x),
# and the episode succeeds, with reward 1 and done, once the torso is within 0.5 of the goal (goal_reaching_env.step,
# eval=True). gymnasium-robotics' AntMaze instead draws start and goal within +-s/4 of the cells' centres, builds its
# ant with reset_noise_scale=0 and succeeds within 0.45.
D4RL_ANTMAZE_SUCCESS_RADIUS = 0.5
D4RL_ANT_RESET_NOISE = 0.1


class D4RLAntMazeTask:
  """gymnasium-robotics' AntMaze (built from `antmaze_env_map(maze, 'd4rl')`) running D4RL's task: its
  position_noise_range (a public attribute; the constructor does not take it) set to 0 so the ant is placed at the
  start cell's centre, then D4RL's reset noise on the ant's qpos and qvel; the goal drawn as D4RL draws it; reward =
  done = 1 within 0.5 of it. Draws come from the env's generator, seeded by reset(seed). Observations (the env's
  dict layout), truncation and spaces are the wrapped env's."""

  def __init__(self, env):
    self.env = env
    self.env.unwrapped.position_noise_range = 0.0
    self.goal = None

  def __getattr__(self, name):  # action_space, spec, unwrapped, close, ... of the wrapped env
    return getattr(self.env, name)

  def reset(self, *, seed=None, options=None):
    _, info = self.env.reset(seed=seed, options=options)
    maze, rng, ant = self.env.unwrapped.maze, self.env.unwrapped.np_random, self.env.unwrapped.ant_env
    quarter = maze.maze_size_scaling * 0.25
    self.goal = (np.asarray(maze.unique_goal_locations[0], np.float64) + rng.uniform(0.0, quarter, 2)
                 + rng.uniform(0.0, 0.5, 2) * quarter)
    self.env.unwrapped.goal = self.goal.copy()  # the env's target site follows D4RL's goal
    self.env.unwrapped.update_target_site_pos()
    qpos = ant.data.qpos + rng.uniform(-D4RL_ANT_RESET_NOISE, D4RL_ANT_RESET_NOISE, ant.model.nq)
    qvel = ant.data.qvel + D4RL_ANT_RESET_NOISE * rng.standard_normal(ant.model.nv)
    ant.set_state(qpos, qvel)
    # the env's dict for that state: x, y as achieved_goal, the rest of qpos ++ qvel as observation
    observation = {"observation": np.concatenate([qpos[2:], qvel]), "achieved_goal": qpos[:2].copy(),
                   "desired_goal": self.goal.copy()}
    return observation, dict(info, success=False)

  def step(self, action):
    observation, _, _, truncated, info = self.env.step(action)
    success = bool(np.linalg.norm(observation["achieved_goal"] - self.goal) <= D4RL_ANTMAZE_SUCCESS_RADIUS)
    return observation, float(success), success, truncated, dict(info, success=success)


def environment_id(task: str, frame: str = "d4rl"):
  """(package, gym id, kwargs) of the environment a D4RL / COG task is evaluated in; `frame` (ANTMAZE_FRAMES)
  chooses the AntMaze map's row order (antmaze_env_map) and is ignored by the other domains."""
  prefix = task.split("-")[0]
  if prefix in GYMNASIUM_MUJOCO:
    gym_id, kwargs = GYMNASIUM_MUJOCO[prefix]
    return "gymnasium", gym_id, kwargs
  if prefix == "antmaze":
    maze = antmaze_maze(task)
    return "gymnasium_robotics", _ANTMAZE_IDS[maze], {"continuing_task": False,
                                                      "maze_map": antmaze_env_map(maze, frame)}
  if prefix == "kitchen":
    if task not in KITCHEN_SUBTASKS:
      raise ConfigError(f"task={task!r}: unknown kitchen task; expected one of {sorted(KITCHEN_SUBTASKS)}")
    return "gymnasium_robotics", "FrankaKitchen-v1", {"tasks_to_complete": list(KITCHEN_SUBTASKS[task])}
  if prefix in ADROIT_IDS:
    return "gymnasium_robotics", ADROIT_IDS[prefix], dict(ADROIT_KWARGS.get(prefix, {}))
  if prefix in COG_ENVIRONMENTS:
    return "roboverse", COG_ENVIRONMENTS[prefix], {}
  raise ConfigError(f"task={task!r}: no evaluation environment known; expected a D4RL locomotion, antmaze, "
                    f"adroit, kitchen or COG ({sorted(COG_ENVIRONMENTS)}) task")


def d4rl_kitchen_observation(observation: Dict, subtasks) -> np.ndarray:
  """FrankaKitchen-v1's dict -> D4RL's 60 values: robot qpos (9), object qpos (21), goal (30: the target of each
  sub-task at its qpos indices, zeros elsewhere, as D4RL's KitchenBase._get_task_goal builds it)."""
  from gymnasium_robotics.envs.franka_kitchen import kitchen_env  # pylint: disable=g-import-not-at-top
  state = np.asarray(observation["observation"], np.float64)  # robot qpos 9, qvel 9, object qpos 21, qvel 20
  goal = np.zeros(30)
  for task in subtasks:
    goal[kitchen_env.OBS_ELEMENT_INDICES[task]] = kitchen_env.OBS_ELEMENT_GOALS[task]
  return np.concatenate([state[:9], state[18:39], goal])


def antmaze_observation(observation: Dict, maze: str, frame: str = "d4rl") -> np.ndarray:
  """AntMaze's dict -> D4RL's 29 values, qpos (x, y, z, quaternion, 8 joints) ++ qvel (14), in `frame`: for 'd4rl'
  the torso's (x, y) moves by -antmaze_d4rl_offset(maze); nothing else changes under a translation."""
  flat = minari_data.flatten_observation(observation, minari_data.GOAL_OBSERVATION_KEYS)
  if frame == "d4rl":
    flat = np.array(flat, copy=True)
    flat[:2] = env_to_d4rl_xy(maze, flat[:2])
  return flat


def observation_adapter(task: str, frame: str = "d4rl") -> Callable:
  """env observation -> the flat vector the dataset (and so the policy) uses for `task`, AntMaze in `frame`."""
  prefix = task.split("-")[0]
  if prefix == "antmaze":
    maze = antmaze_maze(task)
    _check_frame(frame)
    return lambda obs: antmaze_observation(obs, maze, frame)
  if prefix == "kitchen" and task in KITCHEN_SUBTASKS:
    return lambda obs: d4rl_kitchen_observation(obs, KITCHEN_SUBTASKS[task])
  return np.asarray


def make_environment(task: str, observation_dim: Optional[int] = None, frame: str = "d4rl"):
  """The evaluation environment of `task` (AntMaze: in `frame`); ConfigError when its package is missing or the
  layout differs."""
  package, gym_id, kwargs = environment_id(task, frame)
  if package == "roboverse":
    roboverse = _require("roboverse", task, "COG's Widow250 environments")
    return roboverse.make(gym_id, gui=False, transpose_image=False)
  gym = _require("gymnasium", task, "gymnasium environments")
  if package == "gymnasium_robotics":
    gym.register_envs(_require("gymnasium_robotics", task, "antmaze / adroit / kitchen environments"))
  env = gym.make(gym_id, **kwargs)
  if task.startswith("antmaze") and frame == "d4rl":
    env = D4RLAntMazeTask(env)
  if observation_dim is not None:
    sample = observation_adapter(task, frame)(env.observation_space.sample())
    if int(np.prod(np.shape(sample))) != observation_dim:
      env.close()
      raise ConfigError(f"task={task!r}: environment {gym_id} observes {np.shape(sample)} but the dataset's "
                        f"observations have {observation_dim} values; the policy cannot be evaluated there")
  return env


def rollout_returns(env, act: Callable[[np.ndarray], np.ndarray], num_episodes: int, seed: int,
                    max_episode_steps: Optional[int] = None, adapt: Callable = np.asarray,
                    action_noise: float = 0.0, state_noise=0.0,
                    visited: Optional[List[np.ndarray]] = None) -> np.ndarray:
  """Undiscounted returns of `num_episodes` episodes; episode i is reset with seed `seed + i`.

  `adapt` maps the env's observation to the policy's input; `action_noise` / `state_noise` are the standard
  deviations of the noisy evaluations (module docstring; `state_noise` may be one per observation dimension);
  `visited` (a list) receives every observation the policy acted on, as it saw it.
  """
  rng = np.random.default_rng(seed)
  low = getattr(env.action_space, "low", None)
  high = getattr(env.action_space, "high", None)
  returns = []
  name = getattr(getattr(env, "spec", None), "id", None) or type(env).__name__
  progress = Progress(f"eval {name}", num_episodes, "episodes")
  for episode in range(num_episodes):
    observation, _ = env.reset(seed=seed + episode)
    total, steps, done = 0.0, 0, False
    while not done:
      seen = adapt(observation)
      if np.any(state_noise):
        seen = seen + rng.normal(0.0, state_noise, np.shape(seen)).astype(np.asarray(seen).dtype)
      if visited is not None:
        visited.append(np.asarray(seen))
      action = act(seen)
      if action_noise:
        action = np.clip(action + rng.normal(0.0, action_noise, np.shape(action)), low, high).astype(np.float32)
      observation, reward, terminated, truncated, _ = env.step(action)
      total += float(reward)
      steps += 1
      done = terminated or truncated or (max_episode_steps is not None and steps >= max_episode_steps)
    returns.append(total)
    progress.update(1, f"mean return {np.mean(returns):.1f}")
  progress.close()
  return np.asarray(returns, np.float64)


def normalized_score(task: str, raw_return: float) -> Optional[float]:
  """D4RL normalized score (x100) from the reference table, None for a task without a D4RL reference."""
  if not scores.has_d4rl_reference(task):
    return None
  return float(scores.d4rl_normalized_score(task, raw_return))


def evaluate(task: str, act: Callable[[np.ndarray], np.ndarray], num_episodes: int, seed: int,
             observation_dim: Optional[int] = None, max_episode_steps: Optional[int] = None,
             action_noise: float = 0.0, state_noise=0.0,
             visited: Optional[List[np.ndarray]] = None, frame: str = "d4rl") -> Dict[str, float]:
  """return / return_std / num_episodes and, for tasks with a D4RL reference, normalized_score (x100).

  `frame`: the AntMaze frame of the policy's training data (`antmaze_frame(source)`); other domains ignore it."""
  env = make_environment(task, observation_dim, frame)
  adapt = observation_adapter(task, frame) if environment_id(task)[0] != "roboverse" else np.asarray
  try:
    returns = rollout_returns(env, act, num_episodes, seed, max_episode_steps, adapt=adapt,
                              action_noise=action_noise, state_noise=state_noise, visited=visited)
  finally:
    env.close()
  metrics = {"return": float(returns.mean()), "return_std": float(returns.std()),
             "num_episodes": float(num_episodes)}
  if environment_id(task)[0] == "roboverse":
    # COG's metric: an episode succeeds when it collects any reward (sparse 0/1 task rewards).
    metrics["success_rate"] = float(np.mean(returns > 0))
    return metrics
  score = normalized_score(task, metrics["return"])
  if score is not None:
    metrics["normalized_score"] = score
  return metrics
