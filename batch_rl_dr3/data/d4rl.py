"""D4RL data: TFDS `d4rl_*` datasets (RLDS episodes) and raw D4RL hdf5 files, as in-memory transition arrays.

Three ways in, one result (`load_d4rl` -> dict of numpy arrays observation / action / reward /
next_observation / discount, see `batch_rl_dr3.data.rlds`):

* TFDS by task name: `load_d4rl('halfcheetah-medium-v2', data_dir=...)` reads
  `d4rl_mujoco_halfcheetah/v2-medium` (antmaze, adroit likewise) with `tfds.builder`.
* A raw D4RL hdf5 file (the only source of franka-kitchen, which has no TFDS builder):
  `load_d4rl('kitchen-mixed-v0', hdf5_path=...)`, read with h5py. Keys: observations, actions, rewards,
  terminals, timeouts, [next_observations], infos/*, metadata/*.
* `prepare_tfds_from_hdf5`: builds the REAL TFDS dataset from a locally downloaded hdf5 (a machine without
  network): the file is placed in TFDS's download cache under the URL the builder asks for, and the builder's
  own `download_and_prepare` turns it into RLDS episodes. `convert_hdf5_to_rlds` writes any D4RL hdf5
  (kitchen included) as an RLDS TFDS dataset readable by `tfds.builder_from_directory`.

Which transitions (`load_d4rl.transitions`):

* 'd4rl' (the default): D4RL's own `d4rl.qlearning_dataset(env, terminate_on_end=False)` (Farama-Foundation/D4RL
  `d4rl/__init__.py`), the transitions every published D4RL result (CQL, BRAC, the DR3 paper's Table 2) trained
  on. For each row i < N - 1 of the file: skip it if `timeouts[i]` (also when `terminals[i]` is set too);
  otherwise (observations[i], actions[i], rewards[i], observations[i + 1], done = terminals[i]). So the last row
  of the file never makes a transition (even a terminal one), a time-out row never does, `next_observations` in
  the file are ignored, and the s' of a terminal transition is the next row: the first observation of the next
  episode, a placeholder (discount 0 stops bootstrapping; the continuous agents mask DR3 there).
* 'rlds': the RLDS episodes of TFDS's `d4rl/dataset_utils.generate_examples` paired step by step (see
  `batch_rl_dr3.data.rlds`): an episode ends where `terminals | timeouts`; an episode that ends in a terminal
  (or any episode when the file has next_observations) gets one observation-only step (is_last; is_terminal
  iff it ended in a terminal; zeros if there is no next observation). This keeps what D4RL drops: the
  time-out transition bootstraps from next_observations when the file has them, a terminal on the last row
  and a row with both flags (a terminal) stay. Our one difference from TFDS: the observation-only step takes
  `next_observations[end - 1]` of *that* episode, where TFDS takes the last row of the whole file's
  next_observations (so through a TFDS-prepared dataset 'rlds' bootstraps time-outs from a wrong s').

The raw hdf5 path gives exactly D4RL's transitions in every case (in file order). The TFDS / RLDS paths read
episodes, which cannot say everything the hdf5 rows say: in 'd4rl' mode they drop the time-out transitions
as D4RL does, and differ only where the RLDS episode has lost the information (TFDS shuffles episodes and
`generate_examples` keeps only the terminal flag of a row): (1) the placeholder s' of a terminal transition is
the episode's observation-only step, not the next episode's first row; (2) a terminal on the file's last row
is kept; (3) a row with both terminal and timeout set is kept as a terminal transition. (2) and (3) are at most
one transition per such row; `tests/test_d4rl_data.py` checks all of it against a transcription of D4RL's loop.
"""
import json
import os
import re
from typing import Dict, Iterator, Optional, Tuple

import gin
import h5py
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from batch_rl_dr3.data import rlds
from batch_rl_dr3.errors import ConfigError, DataError

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
D4RL_URL_ROOT = "http://rail.eecs.berkeley.edu/datasets/offline_rl/"
_MUJOCO_ENVS = ("halfcheetah", "hopper", "walker2d", "ant")
_ADROIT_ENVS = ("pen", "hammer", "door", "relocate")
_ANTMAZE_TASK = re.compile(r"^antmaze-(umaze|umaze-diverse|medium-play|medium-diverse|large-play|large-diverse)"
                           r"-v(0|2)$")
_GYM_TASK = re.compile(r"^(halfcheetah|hopper|walker2d|ant)-(.+)-v([0-2])$")
_ADROIT_TASK = re.compile(r"^(pen|hammer|door|relocate)-(human|cloned|expert)-v([01])$")
KITCHEN_TASKS = ("kitchen-complete-v0", "kitchen-partial-v0", "kitchen-mixed-v0")
TRANSITION_RULES = ("d4rl", "rlds")


def tfds_name(task: str) -> str:
  """D4RL task name -> TFDS dataset/config name, e.g. 'hopper-medium-replay-v2' -> 'd4rl_mujoco_hopper/v2-medium-replay'.

  Raises ConfigError for tasks without a TFDS builder (kitchen: use `hdf5_path`) or unknown names.
  """
  if task in KITCHEN_TASKS:
    raise ConfigError(f"task={task!r} has no TFDS builder; pass the raw D4RL hdf5 file as hdf5_path "
                      f"(load_d4rl.hdf5_path=...)")
  m = _GYM_TASK.match(task)
  if m:
    env, kind, version = m.groups()
    if version == "0" and kind == "medium-replay":
      kind = "mixed"  # D4RL v0 called medium-replay 'mixed'
    return f"d4rl_mujoco_{env}/v{version}-{kind}"
  m = _ANTMAZE_TASK.match(task)
  if m:
    return f"d4rl_antmaze/{m.group(1)}-v{m.group(2)}"
  m = _ADROIT_TASK.match(task)
  if m:
    env, kind, version = m.groups()
    return f"d4rl_adroit_{env}/v{version}-{kind}"
  raise ConfigError(f"task={task!r}: unknown D4RL task; expected e.g. 'halfcheetah-medium-v2', "
                    f"'antmaze-medium-play-v0', 'pen-human-v1' or one of {KITCHEN_TASKS} (with hdf5_path)")


# --------------------------------------------------------------------------------------------- raw hdf5


def read_d4rl_hdf5(path: str) -> Dict[str, np.ndarray]:
  """All datasets of a D4RL hdf5 file by flat key ('observations', 'infos/qpos', ...), checked for D4RL layout."""
  if not tf.io.gfile.exists(path):
    raise DataError(f"{path}: no such D4RL hdf5 file")
  data = {}
  try:
    with tf.io.gfile.GFile(path, "rb") as f, h5py.File(f, "r") as h5:
      def visit(name, item):
        if isinstance(item, h5py.Dataset):
          data[name] = item[()] if item.shape == () else item[:]
      h5.visititems(visit)
  except (OSError, ValueError) as e:
    raise DataError(f"{path}: not a readable hdf5 file ({e}); expected a D4RL dataset file") from None
  check_d4rl_arrays(data, path)
  return data


def check_d4rl_arrays(data: Dict[str, np.ndarray], source: str) -> None:
  """DataError naming `source` and the key when the D4RL layout is broken."""
  missing = [k for k in REQUIRED_KEYS if k not in data]
  if missing:
    raise DataError(f"{source}: missing key(s) {missing}; a D4RL hdf5 file needs {list(REQUIRED_KEYS)} "
                    f"(+ optional next_observations, infos/*, metadata/*)")
  n = len(data["observations"])
  if n == 0:
    raise DataError(f"{source}: 'observations' is empty")
  for k in REQUIRED_KEYS[1:] + (("next_observations",) if "next_observations" in data else ()):
    if len(data[k]) != n:
      raise DataError(f"{source}: '{k}' has {len(data[k])} rows but 'observations' has {n}; "
                      f"expected one row per step")
  if "next_observations" in data and data["next_observations"].shape != data["observations"].shape:
    raise DataError(f"{source}: 'next_observations' shape {data['next_observations'].shape} != "
                    f"'observations' shape {data['observations'].shape}")
  for k in ("observations", "actions", "rewards"):
    if not np.all(np.isfinite(data[k])):
      raise DataError(f"{source}: '{k}' holds NaN or inf; expected finite values")


def write_d4rl_hdf5(path: str, data: Dict[str, np.ndarray]) -> None:
  """Writes arrays by flat key ('infos/qpos' makes a group) in D4RL's hdf5 layout."""
  check_d4rl_arrays(data, path)
  with h5py.File(path, "w") as h5:
    for key, value in data.items():
      h5.create_dataset(key, data=value)


def hdf5_episodes(data: Dict[str, np.ndarray]) -> Iterator[Dict[str, np.ndarray]]:
  """RLDS episodes (dicts of step arrays, keys rlds.STEP_KEYS) from D4RL arrays; see the module docstring."""
  observations = np.asarray(data["observations"])
  actions = np.asarray(data["actions"])
  rewards = np.asarray(data["rewards"]).reshape(len(observations))
  terminals = np.asarray(data["terminals"]).reshape(-1).astype(bool)
  timeouts = np.asarray(data["timeouts"]).reshape(-1).astype(bool)
  next_observations = data.get("next_observations")
  ends = np.flatnonzero(terminals | timeouts) + 1
  if len(ends) == 0 or ends[-1] != len(observations):
    ends = np.append(ends, len(observations))  # trailing steps without an end flag form a last episode
  begin = 0
  for end in ends:
    length = end - begin
    episode = {
        "observation": observations[begin:end],
        "action": actions[begin:end],
        "reward": rewards[begin:end].astype(np.float32),
        "discount": np.ones(length, np.float32),
        "is_first": np.arange(length) == 0,
        "is_last": np.zeros(length, bool),
        "is_terminal": np.zeros(length, bool),
    }
    ends_in_terminal = bool(terminals[end - 1])
    if ends_in_terminal or next_observations is not None:
      last_obs = (next_observations[end - 1] if next_observations is not None
                  else np.zeros_like(observations[0]))
      if ends_in_terminal:
        episode["discount"][-1] = 0.0
      episode = {
          "observation": np.concatenate([episode["observation"], last_obs[None]]),
          "action": np.concatenate([episode["action"], np.zeros_like(actions[:1])]),
          "reward": np.concatenate([episode["reward"], np.zeros(1, np.float32)]),
          "discount": np.concatenate([episode["discount"], np.zeros(1, np.float32)]),
          "is_first": np.concatenate([episode["is_first"], [False]]),
          "is_last": np.concatenate([episode["is_last"], [True]]),
          "is_terminal": np.concatenate([episode["is_terminal"], [ends_in_terminal]]),
      }
    else:
      episode["is_last"][-1] = True
    yield episode
    begin = end


def qlearning_transitions(data: Dict[str, np.ndarray], source: str) -> Dict[str, np.ndarray]:
  """D4RL arrays -> D4RL's `qlearning_dataset(terminate_on_end=False)` transitions, in file order.

  Rows i < N - 1 without a time-out; s' = observations[i + 1]; discount = 1 - terminals[i] (module docstring);
  next_action = actions[i + 1], as the actor-regularization study's extension of qlearning_dataset (DT6A/ActoReg
  rebrac.py) gives ReBRAC's critic BC term (after a terminal: the next episode's first action, times discount 0).
  """
  observations = np.asarray(data["observations"])
  timeouts = np.asarray(data["timeouts"]).reshape(-1).astype(bool)
  terminals = np.asarray(data["terminals"]).reshape(-1).astype(bool)
  rows = np.flatnonzero(~timeouts[:-1])
  if len(rows) == 0:
    raise DataError(f"{source}: no transitions (every row but the last is a time-out, or the file has one row)")
  arrays = {
      "observation": observations[rows],
      "action": np.asarray(data["actions"])[rows],
      "reward": np.asarray(data["rewards"]).reshape(len(observations))[rows],
      "next_observation": observations[rows + 1],
      "discount": 1.0 - terminals[rows],
      "next_action": np.asarray(data["actions"])[rows + 1],
  }
  return rlds.normalise_dtypes(arrays, source)


def check_transition_rule(transitions: str) -> None:
  if transitions not in TRANSITION_RULES:
    raise ConfigError(f"load_d4rl.transitions={transitions!r}; expected one of {TRANSITION_RULES} ('d4rl' = "
                      f"D4RL's qlearning_dataset, 'rlds' = TFDS's RLDS episodes paired step by step)")


def hdf5_transitions(data: Dict[str, np.ndarray], source: str, transitions: str = "d4rl") -> Dict[str, np.ndarray]:
  """D4RL arrays -> transition arrays by the rule `transitions` (module docstring)."""
  check_transition_rule(transitions)
  if transitions == "d4rl":
    return qlearning_transitions(data, source)
  return rlds.numpy_episodes_to_transitions(list(hdf5_episodes(data)), source)


# --------------------------------------------------------------------------------------------- TFDS


def _builder_download_url(builder) -> str:
  config = builder.builder_config
  env = builder._ds_config.name  # pylint: disable=protected-access
  if env == "walker2d" and config.name == "v0-mixed":
    env = "walker"  # the file is named walker_mixed.hdf5 (TFDS's builder makes the same exception)
  return f"{D4RL_URL_ROOT}{config.dataset_dir}/{env}{config.file_suffix}.hdf5"


def prepare_tfds_from_hdf5(task: str, hdf5_path: str, data_dir: str):
  """Builds TFDS's own D4RL dataset for `task` from a local copy of its raw hdf5 file; returns the builder.

  The file goes into TFDS's download cache (`<data_dir>/downloads`) under the name TFDS derives from the
  dataset URL, with the INFO file TFDS writes after a download, so `download_and_prepare` runs offline.
  """
  from tensorflow_datasets.core.download import checksums, resource  # pylint: disable=g-import-not-at-top
  read_d4rl_hdf5(hdf5_path)  # fail early, with our message, on a broken file
  builder = tfds.builder(tfds_name(task), data_dir=data_dir)
  url = _builder_download_url(builder)
  download_dir = os.path.join(data_dir, "downloads")
  tf.io.gfile.makedirs(download_dir)
  cached = os.path.join(download_dir, resource.get_dl_fname(url))
  tf.io.gfile.copy(hdf5_path, cached, overwrite=True)
  url_info = checksums.compute_url_info(cached)
  with open(cached + ".INFO", "w") as f:
    json.dump({"urls": [url], "dataset_names": [builder.name], "original_fname": os.path.basename(url),
               "url_info": url_info.asdict()}, f)
  builder.download_and_prepare(download_dir=download_dir)
  return builder


def convert_hdf5_to_rlds(hdf5_path: str, data_dir: str, name: str = "d4rl_raw",
                         version: str = "1.0.0") -> str:
  """Writes a raw D4RL hdf5 file as an RLDS TFDS dataset; returns its directory for `tfds.builder_from_directory`."""
  data = read_d4rl_hdf5(hdf5_path)
  obs, act = np.asarray(data["observations"]), np.asarray(data["actions"])
  features = rlds.rlds_features(obs.shape[1:], obs.dtype, act.shape[1:], act.dtype)
  examples = [(i, {"steps": episode}) for i, episode in enumerate(hdf5_episodes(data))]
  builder = tfds.dataset_builders.store_as_tfds_dataset(
      name=name, version=version, features=features, split_datasets={"train": examples},
      data_dir=data_dir, disable_shuffling=True,
      description=f"RLDS episodes converted from the D4RL hdf5 file {os.path.basename(hdf5_path)}")
  return str(builder.data_dir)


def tfds_transitions(builder, source: str, split: str = "train", max_transitions: Optional[int] = None,
                     transitions: str = "rlds") -> Dict[str, np.ndarray]:
  """Transition arrays from a prepared TFDS/RLDS builder (episodes in stored order).

  transitions='d4rl' drops the time-out transitions as D4RL's qlearning_dataset does (module docstring).
  """
  check_transition_rule(transitions)
  episodes = builder.as_dataset(split=split, shuffle_files=False)
  pairs = rlds.episodes_to_transitions(episodes, keep_truncation_transitions=transitions == "rlds")
  return rlds.transitions_to_arrays(pairs, source, max_transitions)


# --------------------------------------------------------------------------------------------- entry point


def scale_rewards(transitions: Dict[str, np.ndarray], reward_scale: float, reward_bias: float):
  """r <- reward_scale * (r + reward_bias), e.g. CQL's antmaze recipe (r - 0.5) * 4."""
  out = dict(transitions)
  out["reward"] = (reward_scale * (transitions["reward"] + reward_bias)).astype(np.float32)
  return out


@gin.configurable
def load_d4rl(task: str = gin.REQUIRED, data_dir: Optional[str] = None, hdf5_path: Optional[str] = None,
              rlds_dir: Optional[str] = None, max_transitions: Optional[int] = None, reward_scale: float = 1.0,
              reward_bias: float = 0.0, transitions: str = "d4rl") -> Tuple[Dict[str, np.ndarray], str]:
  """Transition arrays of a D4RL task, and a one-line description of where they came from.

  Args:
    task: D4RL name ('halfcheetah-medium-v2', 'antmaze-large-play-v0', 'kitchen-mixed-v0', ...).
    data_dir: TFDS data dir holding the prepared `d4rl_*` dataset (used when hdf5_path/rlds_dir are None).
    hdf5_path: a raw D4RL hdf5 file (required for kitchen); read directly with h5py.
    rlds_dir: a directory written by `convert_hdf5_to_rlds` (or any RLDS TFDS dataset folder).
    max_transitions: keep only the first this-many transitions (for smoke tests).
    reward_scale, reward_bias: r <- reward_scale * (r + reward_bias).
    transitions: 'd4rl' (D4RL's qlearning_dataset, the default) or 'rlds' (TFDS's episodes, keeping what D4RL
      drops); see the module docstring.
  """
  check_transition_rule(transitions)
  if hdf5_path:
    data = hdf5_transitions(read_d4rl_hdf5(hdf5_path), hdf5_path, transitions)
    if max_transitions is not None:
      data = {k: v[:max_transitions] for k, v in data.items()}
    source = f"hdf5:{hdf5_path}"
  elif rlds_dir:
    if not tf.io.gfile.exists(os.path.join(rlds_dir, "dataset_info.json")):
      raise DataError(f"{rlds_dir}: no dataset_info.json; expected a TFDS/RLDS dataset directory "
                      f"(e.g. written by convert_hdf5_to_rlds)")
    data = tfds_transitions(tfds.builder_from_directory(rlds_dir), rlds_dir, max_transitions=max_transitions,
                            transitions=transitions)
    source = f"rlds:{rlds_dir}"
  else:
    name = tfds_name(task)
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
      raise DataError(f"TFDS dataset {name} is not prepared in data_dir={builder.data_dir}; prepare it with "
                      f"tfds.builder('{name}').download_and_prepare() or, from a local hdf5 file, "
                      f"batch_rl_dr3.data.d4rl.prepare_tfds_from_hdf5('{task}', path, data_dir)")
    data = tfds_transitions(builder, name, max_transitions=max_transitions, transitions=transitions)
    source = f"tfds:{name}"
  if reward_scale != 1.0 or reward_bias != 0.0:
    data = scale_rewards(data, reward_scale, reward_bias)
  return data, source
