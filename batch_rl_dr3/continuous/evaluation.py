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
start cell to D4RL's goal cell, but in gymnasium-robotics' coordinates (centred, y up the rows), a shifted mirror
image of D4RL's: right for Minari's AntMaze data, not for policies trained on D4RL's own files (README).

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


def environment_id(task: str):
  """(package, gym id, kwargs) of the environment a D4RL / COG task is evaluated in."""
  prefix = task.split("-")[0]
  if prefix in GYMNASIUM_MUJOCO:
    gym_id, kwargs = GYMNASIUM_MUJOCO[prefix]
    return "gymnasium", gym_id, kwargs
  if prefix == "antmaze":
    maze = task[len("antmaze-"):].rsplit("-v", 1)[0].split("-")[0]  # umaze(-diverse), medium-play, ...
    if maze not in _ANTMAZE_IDS:
      raise ConfigError(f"task={task!r}: unknown AntMaze maze; expected antmaze-{{umaze,medium,large}}-...")
    return "gymnasium_robotics", _ANTMAZE_IDS[maze], {"continuing_task": False,
                                                      "maze_map": D4RL_ANTMAZE_EVAL_MAPS[maze]}
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


def observation_adapter(task: str) -> Callable:
  """env observation -> the flat vector the dataset (and so the policy) uses for `task`."""
  prefix = task.split("-")[0]
  if prefix == "antmaze":
    return lambda obs: minari_data.flatten_observation(obs, minari_data.GOAL_OBSERVATION_KEYS)
  if prefix == "kitchen" and task in KITCHEN_SUBTASKS:
    return lambda obs: d4rl_kitchen_observation(obs, KITCHEN_SUBTASKS[task])
  return np.asarray


def make_environment(task: str, observation_dim: Optional[int] = None):
  """The evaluation environment of `task`; ConfigError when its package is missing or the layout differs."""
  package, gym_id, kwargs = environment_id(task)
  if package == "roboverse":
    roboverse = _require("roboverse", task, "COG's Widow250 environments")
    return roboverse.make(gym_id, gui=False, transpose_image=False)
  gym = _require("gymnasium", task, "gymnasium environments")
  if package == "gymnasium_robotics":
    gym.register_envs(_require("gymnasium_robotics", task, "antmaze / adroit / kitchen environments"))
  env = gym.make(gym_id, **kwargs)
  if observation_dim is not None:
    sample = observation_adapter(task)(env.observation_space.sample())
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
             visited: Optional[List[np.ndarray]] = None) -> Dict[str, float]:
  """return / return_std / num_episodes and, for tasks with a D4RL reference, normalized_score (x100)."""
  env = make_environment(task, observation_dim)
  adapt = observation_adapter(task) if environment_id(task)[0] != "roboverse" else np.asarray
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
