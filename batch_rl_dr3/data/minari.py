"""Minari datasets (Farama, `minari` 0.5.x) as in-memory transition arrays, beside D4RL hdf5 and TFDS.

`load_minari(task, dataset_id=..., path=...)` returns the same `(arrays, source)` as `load_d4rl`
(`batch_rl_dr3.data.rlds.TRANSITION_KEYS`), plus two per-transition columns the D4RL path does not have:
`episode` (int64, the Minari episode id) and `next_action` (a_{t+1} of the same episode; at an episode's last step
there is none, and a_t stands in: a terminal step never bootstraps; a truncated one is dropped by the default
rule, and under 'rlds' gets a slightly wrong next-action term: the reference's §6.3 options).

Where the data comes from (never downloaded here):
* a Minari dataset id ('D4RL/door/human-v2', 'mujoco/hopper/medium-v0') resolved under the local Minari root,
  `$MINARI_DATASETS_PATH` or else `~/.minari/datasets` (the folder `<root>/<id>/data`);
* or a local Minari dataset folder (`path=`: the folder holding `data/metadata.json`, or `data/` itself).
With neither, a D4RL task name is mapped through `MINARI_IDS` (the study's names -> Minari ids).

Minari stores an episode as T+1 observations o_0..o_T and T actions, rewards, terminations and truncations. Transition
t = (o_t, a_t, r_t, o_{t+1}, discount = 1 - terminations[t]): a truncation never stops bootstrapping. Which steps
become transitions (`load_minari.transitions`, the same two rules as `load_d4rl.transitions`):
* 'd4rl' (default, as load_d4rl): D4RL's qlearning_dataset drops the time-out step (its s' was not stored), so the
  step where an episode is truncated is dropped here too; everything else is kept;
* 'rlds': every step (Minari stores o_T, so a truncated episode's last step has its true s'); exactly the
  transitions `load_d4rl(hdf5_path=..., transitions='rlds')` gives for the same episodes written as a D4RL file
  with `next_observations` (tested).

Dict observation spaces (AntMaze, Kitchen) are flattened by `flatten_observation` in the order of
`observation_keys`; the default for goal-conditioned mazes, ('achieved_goal', 'observation'), rebuilds D4RL's
29-value AntMaze observation (x, y, then the ant's 27 values; D4RL's observation never held the goal).
"""
import os
from typing import Dict, Optional, Sequence, Tuple

import gin
import numpy as np

from batch_rl_dr3.data import d4rl
from batch_rl_dr3.data import rlds
from batch_rl_dr3.errors import ConfigError, DataError

# The study's D4RL names -> Minari ids (reference §6.1). None: Minari has no equivalent.
# Locomotion: Minari's mujoco/* data were re-collected in Gymnasium's v5 environments with other policies (not the
# same data); medium-expert is D4RL's concatenation of medium and expert (see MINARI_CONCATENATIONS).
_LOCOMOTION = ("halfcheetah", "hopper", "walker2d")
MINARI_IDS: Dict[str, Optional[str]] = {}
for _env in _LOCOMOTION:
  MINARI_IDS.update({
      f"{_env}-medium-v2": f"mujoco/{_env}/medium-v0",
      f"{_env}-expert-v2": f"mujoco/{_env}/expert-v0",
      f"{_env}-random-v2": None,  # closest: mujoco/<env>/simple-v0, a weak policy, not uniform random
      f"{_env}-medium-expert-v2": None,  # concatenate medium-v0 and expert-v0 (MINARI_CONCATENATIONS)
      f"{_env}-medium-replay-v2": None,
      f"{_env}-full-replay-v2": None,
  })
for _maze in ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse"):
  MINARI_IDS[f"antmaze-{_maze}-v2"] = f"D4RL/antmaze/{_maze}-v1"
for _hand in ("pen", "door", "hammer", "relocate"):
  for _kind in ("human", "cloned", "expert"):
    MINARI_IDS[f"{_hand}-{_kind}-v1"] = f"D4RL/{_hand}/{_kind}-v2"
for _kitchen in ("complete", "partial", "mixed"):
  MINARI_IDS[f"kitchen-{_kitchen}-v0"] = f"D4RL/kitchen/{_kitchen}-v2"
MINARI_CONCATENATIONS = {f"{e}-medium-expert-v2": (f"mujoco/{e}/medium-v0", f"mujoco/{e}/expert-v0")
                         for e in _LOCOMOTION}
GOAL_OBSERVATION_KEYS = ("achieved_goal", "observation")


def minari_root() -> str:
  """The local Minari root: $MINARI_DATASETS_PATH, else ~/.minari/datasets (minari's own rule)."""
  return os.environ.get("MINARI_DATASETS_PATH") or os.path.join(os.path.expanduser("~"), ".minari", "datasets")


def minari_ids_for(task: str) -> Tuple[str, ...]:
  """The Minari ids whose episodes make up D4RL task `task` (one, or two for medium-expert); ConfigError if none."""
  if task in MINARI_CONCATENATIONS:
    return MINARI_CONCATENATIONS[task]
  if MINARI_IDS.get(task):
    return (MINARI_IDS[task],)
  if task in MINARI_IDS:
    raise ConfigError(f"task={task!r} has no Minari equivalent (see the README's Minari table); load it with "
                      f"load_d4rl, or name a Minari dataset with load_minari.dataset_id")
  raise ConfigError(f"task={task!r}: no Minari id known for it; set load_minari.dataset_id (e.g. "
                    f"'D4RL/door/human-v2') or load_minari.path (a local Minari dataset folder)")


def _data_folder(path: str, what: str) -> str:
  for candidate in (os.path.join(path, "data"), path):
    if os.path.isfile(os.path.join(candidate, "metadata.json")):
      return candidate
  raise DataError(f"{what}: no Minari dataset there (expected {os.path.join(path, 'data', 'metadata.json')}); "
                  f"get it with `minari download <id>` on a machine with network and copy the folder, or set "
                  f"MINARI_DATASETS_PATH to the root that holds it")


def open_dataset(dataset_id: Optional[str] = None, path: Optional[str] = None):
  """A `minari.MinariDataset` from a local id (under `minari_root()`) or folder; never downloads."""
  import minari  # pylint: disable=g-import-not-at-top
  if (dataset_id is None) == (path is None):
    raise ConfigError(f"load_minari: give exactly one of dataset_id and path (got dataset_id={dataset_id!r}, "
                      f"path={path!r})")
  if path is not None:
    folder = _data_folder(path, f"load_minari.path={path}")
  else:
    folder = _data_folder(os.path.join(minari_root(), dataset_id),
                          f"Minari dataset {dataset_id!r} under {minari_root()}")
  try:
    return minari.MinariDataset(folder)
  except (ValueError, KeyError, OSError) as e:
    raise DataError(f"{folder}: not a readable Minari dataset ({e})") from None


def flatten_observation(observation, keys: Optional[Sequence[str]] = None) -> np.ndarray:
  """An observation (array, or dict of arrays with a leading time axis or none) -> one flat float vector per row.

  Dicts are concatenated in the order of `keys` (default: GOAL_OBSERVATION_KEYS when present, else sorted keys);
  nested dicts (Kitchen's goals) flatten recursively in sorted key order.
  """
  if not isinstance(observation, dict):
    return np.asarray(observation)
  if keys is None:
    keys = GOAL_OBSERVATION_KEYS if set(GOAL_OBSERVATION_KEYS) <= set(observation) else sorted(observation)
  missing = [k for k in keys if k not in observation]
  if missing:
    raise DataError(f"observation keys {missing} not in the dataset's observation dict {sorted(observation)}")
  parts = [np.asarray(flatten_observation(observation[k])) for k in keys]
  leading = parts[0].shape[:-1] if parts[0].ndim else ()
  return np.concatenate([p.reshape(leading + (-1,)) for p in parts], axis=-1)


def episode_transitions(episode, observation_keys=None, transitions: str = "d4rl") -> Dict[str, np.ndarray]:
  """One `minari.EpisodeData` -> its transitions (keys TRANSITION_KEYS + next_action + episode; module docstring)."""
  observations = flatten_observation(episode.observations, observation_keys)
  actions = np.asarray(episode.actions)
  steps = len(actions)
  if len(observations) != steps + 1:
    raise DataError(f"Minari episode {episode.id}: {len(observations)} observations for {steps} actions; "
                    f"expected T+1 observations for T steps")
  next_action = np.concatenate([actions[1:], actions[-1:]]) if steps else actions
  arrays = {
      "observation": observations[:-1],
      "action": actions,
      "reward": np.asarray(episode.rewards).reshape(steps),
      "next_observation": observations[1:],
      "discount": 1.0 - np.asarray(episode.terminations, np.float32).reshape(steps),
      "next_action": next_action,
      "episode": np.full(steps, int(episode.id), np.int64),
  }
  if transitions == "d4rl":
    keep = ~np.asarray(episode.truncations, bool).reshape(steps)
    arrays = {k: v[keep] for k, v in arrays.items()}
  return arrays


def dataset_transitions(dataset, source: str, observation_keys=None, episode_offset: int = 0,
                        max_transitions: Optional[int] = None, transitions: str = "d4rl") -> Dict[str, np.ndarray]:
  """All transitions of a MinariDataset in episode order (float32 unless uint8 images; NaN/inf -> DataError)."""
  columns = []
  total = 0
  for episode in dataset.iterate_episodes():
    part = episode_transitions(episode, observation_keys, transitions)
    part["episode"] = part["episode"] + episode_offset
    columns.append(part)
    total += len(part["reward"])
    if max_transitions is not None and total >= max_transitions:
      break
  if not columns or total == 0:
    raise DataError(f"{source}: no transitions (no episode with at least one step)")
  arrays = {k: np.concatenate([c[k] for c in columns]) for k in columns[0]}
  if max_transitions is not None:
    arrays = {k: v[:max_transitions] for k, v in arrays.items()}
  episodes = arrays.pop("episode")
  arrays = rlds.normalise_dtypes(arrays, source)
  arrays["episode"] = episodes
  return arrays


@gin.configurable
def load_minari(task: str = gin.REQUIRED, dataset_id: Optional[str] = None, path: Optional[str] = None,
                observation_keys: Optional[Sequence[str]] = None, max_transitions: Optional[int] = None,
                reward_scale: float = 1.0, reward_bias: float = 0.0,
                transitions: str = "d4rl") -> Tuple[Dict[str, np.ndarray], str]:
  """Transition arrays of a local Minari dataset and a one-line description of the source.

  Args:
    task: the task evaluated (a D4RL name such as 'door-human-v1' selects its environment and reference scores);
      also the dataset when neither dataset_id nor path is given (through MINARI_IDS / MINARI_CONCATENATIONS).
    dataset_id: a Minari id resolved under the local Minari root (`minari_root()`).
    path: a local Minari dataset folder (instead of dataset_id).
    observation_keys: order in which a dict observation is flattened (see `flatten_observation`).
    max_transitions: keep only the first this-many transitions (smoke tests).
    reward_scale, reward_bias: r <- reward_scale * (r + reward_bias), as load_d4rl.
    transitions: 'd4rl' (drop the step where an episode is truncated, as D4RL's qlearning_dataset) or 'rlds'
      (keep every step); see the module docstring.
  """
  if transitions not in d4rl.TRANSITION_RULES:
    raise ConfigError(f"load_minari.transitions={transitions!r}; expected one of {d4rl.TRANSITION_RULES}")
  if path is not None or dataset_id is not None:
    datasets = [(dataset_id or path, open_dataset(dataset_id=dataset_id, path=path))]
  else:
    datasets = [(i, open_dataset(dataset_id=i)) for i in minari_ids_for(task)]
  parts, offset = [], 0
  for name, dataset in datasets:
    part = dataset_transitions(dataset, f"minari:{name}", observation_keys, episode_offset=offset,
                               max_transitions=max_transitions, transitions=transitions)
    offset = int(part["episode"].max()) + 1
    parts.append(part)
  data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  if max_transitions is not None:
    data = {k: v[:max_transitions] for k, v in data.items()}
  if reward_scale != 1.0 or reward_bias != 0.0:
    data = d4rl.scale_rewards(data, reward_scale, reward_bias)
  return data, "minari:" + "+".join(name for name, _ in datasets)
