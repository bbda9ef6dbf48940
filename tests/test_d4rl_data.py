"""D4RL loaders on tiny files in the real formats: raw D4RL hdf5 (h5py), the REAL TFDS `d4rl_mujoco_*` builder
prepared offline from such a file, and our hdf5 -> RLDS converter read back with `tfds.builder_from_directory`.
Episode splitting is checked against TFDS's own `d4rl.dataset_utils.generate_examples`; the default transitions
against a transcription of D4RL's own `qlearning_dataset` loop (`d4rl_qlearning_dataset` below)."""
import h5py
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.d4rl import dataset_utils as tfds_d4rl_utils

from batch_rl_dr3.data import d4rl
from batch_rl_dr3.data import rlds
from batch_rl_dr3.errors import ConfigError, DataError


def d4rl_arrays(obs_dim=17, act_dim=6, n=14, terminal_rows=(4,), timeout_rows=(9,), seed=0,
                next_observations=False):
  """Episodes [0..4] (terminal), [5..9] (time-out), [10..13] (unfinished tail)."""
  rng = np.random.default_rng(seed)
  data = {"observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
          "actions": rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
          "rewards": rng.normal(size=n).astype(np.float32),
          "terminals": np.zeros(n, bool), "timeouts": np.zeros(n, bool)}
  data["terminals"][list(terminal_rows)] = True
  data["timeouts"][list(timeout_rows)] = True
  if next_observations:
    data["next_observations"] = rng.normal(size=(n, obs_dim)).astype(np.float32)
  return data


def expected_transitions(data):
  """By hand: within an episode obs_t -> obs_{t+1} and next_action a_{t+1}; a terminal step -> zeros (or
  next_observations) with discount 0 and a zero next_action; the last step of a time-out / unfinished episode is
  dropped unless next_observations exist (then its next_action is zeros too)."""
  rows = []
  n = len(data["rewards"])
  begin = 0
  for t in range(n):
    end_here = data["terminals"][t] or data["timeouts"][t] or t == n - 1
    if not end_here:
      rows.append((data["observations"][t], data["actions"][t], data["rewards"][t], data["observations"][t + 1], 1.0,
                   data["actions"][t + 1]))
      continue
    no_action = np.zeros_like(data["actions"][t])
    if data["terminals"][t]:
      nxt = data["next_observations"][t] if "next_observations" in data else np.zeros_like(data["observations"][t])
      rows.append((data["observations"][t], data["actions"][t], data["rewards"][t], nxt, 0.0, no_action))
    elif "next_observations" in data:
      rows.append((data["observations"][t], data["actions"][t], data["rewards"][t],
                   data["next_observations"][t], 1.0, no_action))
    begin = t + 1
  del begin
  keys = ("observation", "action", "reward", "next_observation", "discount", "next_action")
  return {k: np.asarray([r[i] for r in rows], np.float32) for i, k in enumerate(keys)}


def d4rl_qlearning_dataset(dataset, terminate_on_end=False):
  """The loop of D4RL's `qlearning_dataset` (Farama-Foundation/D4RL d4rl/__init__.py), transcribed line by line
  for a dataset with `timeouts` (our loaders require them), with the actor-regularization study's `next_actions`
  (DT6A/ActoReg rebrac.py's copy of the loop). The independent reference of the 'd4rl' rule."""
  n = dataset["rewards"].shape[0]
  obs_, next_obs_, action_, reward_, done_, next_action_ = [], [], [], [], [], []
  for i in range(n - 1):
    obs = dataset["observations"][i].astype(np.float32)
    new_obs = dataset["observations"][i + 1].astype(np.float32)
    action = dataset["actions"][i].astype(np.float32)
    new_action = dataset["actions"][i + 1].astype(np.float32)
    reward = dataset["rewards"][i].astype(np.float32)
    done_bool = bool(dataset["terminals"][i])
    final_timestep = dataset["timeouts"][i]
    if (not terminate_on_end) and final_timestep:
      continue
    obs_.append(obs)
    next_obs_.append(new_obs)
    action_.append(action)
    reward_.append(reward)
    done_.append(done_bool)
    next_action_.append(new_action)
  return {"observations": np.array(obs_), "actions": np.array(action_), "next_observations": np.array(next_obs_),
          "rewards": np.array(reward_), "terminals": np.array(done_), "next_actions": np.array(next_action_)}


def as_ours(q):
  """D4RL's output keys -> ours (discount = 1 - done)."""
  return {"observation": q["observations"], "action": q["actions"], "reward": q["rewards"],
          "next_observation": q["next_observations"], "discount": 1.0 - q["terminals"].astype(np.float32),
          "next_action": q["next_actions"]}


def edge_case_arrays(next_observations):
  """Every edge case of the D4RL rule in one file of 16 rows: a terminal mid-file (row 2), a time-out (row 5),
  a row with BOTH terminal and time-out set (row 9), a terminal on the file's last row (row 15)."""
  return d4rl_arrays(n=16, terminal_rows=(2, 9, 15), timeout_rows=(5, 9), seed=3, next_observations=next_observations)


def sort_rows(t):
  order = np.lexsort(np.concatenate([t["observation"], t["action"]], axis=1).T)
  return {k: v[order] for k, v in t.items()}


@pytest.mark.parametrize("with_next", [False, True])
def test_hdf5_transitions_equal_d4rl_qlearning_dataset(tmp_path, with_next):
  data = edge_case_arrays(with_next)
  path = str(tmp_path / "halfcheetah_medium.hdf5")
  d4rl.write_d4rl_hdf5(path, data)
  got, _ = d4rl.load_d4rl("halfcheetah-medium-v0", hdf5_path=path)  # transitions='d4rl' is the default
  want = as_ours(d4rl_qlearning_dataset(data))
  # 15 rows i < N-1, minus time-outs 5 and 9 (9 is also terminal): 13; the terminal on row 15 is dropped.
  assert len(want["reward"]) == 13
  assert_transitions_equal(got, want)  # exact, file order; next_observations (when present) ignored like D4RL
  np.testing.assert_array_equal(got["next_observation"][2], data["observations"][3])  # s' after a terminal
  assert got["discount"].tolist().count(0.0) == 1


@pytest.mark.parametrize("with_next", [False, True])
@pytest.mark.parametrize("path_kind", ["tfds", "rlds"])
def test_episode_paths_equal_d4rl_but_where_rlds_lost_the_rows(tmp_path, with_next, path_kind):
  """Through TFDS's real builder and through our RLDS converter: D4RL's transitions, except the three documented
  cases the RLDS episode cannot express (module docstring of data/d4rl.py)."""
  data = edge_case_arrays(with_next)
  path = str(tmp_path / "halfcheetah_medium.hdf5")
  d4rl.write_d4rl_hdf5(path, data)
  if path_kind == "tfds":
    d4rl.prepare_tfds_from_hdf5("halfcheetah-medium-v0", path, str(tmp_path / "tfds"))
    got, _ = d4rl.load_d4rl("halfcheetah-medium-v0", data_dir=str(tmp_path / "tfds"))
  else:
    rlds_dir = d4rl.convert_hdf5_to_rlds(path, str(tmp_path / "rlds"), name="halfcheetah_medium")
    got, _ = d4rl.load_d4rl("halfcheetah-medium-v0", rlds_dir=rlds_dir)
  want = as_ours(d4rl_qlearning_dataset(data))
  # (2) the terminal on the last row and (3) the row with both flags are kept as terminal transitions.
  extra_rows = [9, 15]
  for key, column in (("observation", "observations"), ("action", "actions"), ("reward", "rewards")):
    want[key] = np.concatenate([want[key], data[column][extra_rows].astype(np.float32)])
  want["next_observation"] = np.concatenate([want["next_observation"], np.zeros((2, 17), np.float32)])
  want["discount"] = np.concatenate([want["discount"], np.zeros(2, np.float32)])
  want["next_action"] = np.concatenate([want["next_action"], np.zeros((2, data["actions"].shape[1]), np.float32)])
  got, want = sort_rows(got), sort_rows(want)
  assert len(got["reward"]) == len(want["reward"]) == 15
  terminal = want["discount"] == 0.0
  assert terminal.sum() == 3
  # (1) the s' of terminal transitions is a placeholder: D4RL's next row vs the RLDS observation-only step.
  want["next_observation"][terminal] = got["next_observation"][terminal]
  # ... and so is a' (times discount 0 wherever it is used): D4RL's next row vs the episode's padding action.
  np.testing.assert_array_equal(got["next_action"][terminal], np.zeros_like(got["next_action"][terminal]))
  want["next_action"][terminal] = 0.0
  assert_transitions_equal(got, want)
  placeholders = got["next_observation"][terminal]
  if with_next and path_kind == "rlds":  # our converter: that episode's next_observations row
    rows = [int(np.flatnonzero(np.all(data["observations"] == o, axis=1))[0]) for o in got["observation"][terminal]]
    assert sorted(rows) == [2, 9, 15]
    np.testing.assert_array_equal(placeholders, data["next_observations"][rows])
  elif with_next:  # TFDS's builder: the file's LAST next_observations row, for every episode
    np.testing.assert_array_equal(placeholders, np.repeat(data["next_observations"][-1:], 3, axis=0))
  else:
    np.testing.assert_array_equal(placeholders, np.zeros_like(placeholders))


def test_rlds_rule_keeps_time_out_transitions_with_next_observations(tmp_path):
  data = edge_case_arrays(next_observations=True)
  path = str(tmp_path / "halfcheetah_medium.hdf5")
  d4rl.write_d4rl_hdf5(path, data)
  got, _ = d4rl.load_d4rl("halfcheetah-medium-v0", hdf5_path=path, transitions="rlds")
  # D4RL's 13 + the time-out row 5 (bootstrapping from next_observations[5]) + rows 9 and 15 (terminals).
  assert len(got["reward"]) == 16
  row5 = np.flatnonzero(np.all(got["observation"] == data["observations"][5], axis=1))
  assert len(row5) == 1
  np.testing.assert_array_equal(got["next_observation"][row5[0]], data["next_observations"][5])
  assert got["discount"][row5[0]] == 1.0
  with pytest.raises(ConfigError, match="load_d4rl.transitions='qlearning'; expected one of"):
    d4rl.load_d4rl("halfcheetah-medium-v0", hdf5_path=path, transitions="qlearning")


def assert_transitions_equal(got, want):
  assert set(got) == set(want)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-6, err_msg=k)


def test_window_batch_is_rlds_batch_with_shift():
  ds = tf.data.Dataset.range(1, 5)
  assert [list(x) for x in rlds.window_batch(ds, 2, 1).as_numpy_iterator()] == [[1, 2], [2, 3], [3, 4]]
  assert [list(x) for x in rlds.window_batch(tf.data.Dataset.range(6), 3, 2).as_numpy_iterator()] == [
      [0, 1, 2], [2, 3, 4]]
  nested = tf.data.Dataset.from_tensor_slices({"a": [1, 2, 3], "b": [[1.0], [2.0], [3.0]]})
  windows = list(rlds.window_batch(nested, 2).as_numpy_iterator())
  assert [list(w["a"]) for w in windows] == [[1, 2], [2, 3]] and windows[1]["b"].shape == (2, 1)
  pairs = list(rlds.consecutive_pairs(nested).as_numpy_iterator())
  assert len(pairs) == len(windows)
  for pair, window in zip(pairs, windows):
    for key in window:
      np.testing.assert_array_equal(pair[key], window[key])


@pytest.mark.parametrize("with_next", [False, True])
def test_hdf5_transitions_by_hand(tmp_path, with_next):
  data = d4rl_arrays(next_observations=with_next)
  path = str(tmp_path / "halfcheetah_medium.hdf5")
  d4rl.write_d4rl_hdf5(path, data)
  got, source = d4rl.load_d4rl("halfcheetah-medium-v0", hdf5_path=path, transitions="rlds")
  assert source == f"hdf5:{path}"
  want = expected_transitions(data)
  # 5 (terminal) + 4 (time-out loses its last step) + 3 (unfinished tail) without next_observations.
  assert len(got["reward"]) == (14 if with_next else 12)
  assert_transitions_equal(got, want)
  assert got["discount"].tolist().count(0.0) == 1


def test_episodes_match_tfds_generate_examples(tmp_path):
  """Our hdf5 -> RLDS split equals TFDS's (without next_observations, where TFDS has no quirk)."""
  data = d4rl_arrays(n=20, terminal_rows=(3, 11), timeout_rows=(7, 16))
  path = str(tmp_path / "file.hdf5")
  d4rl.write_d4rl_hdf5(path, data)
  ours = list(d4rl.hdf5_episodes(d4rl.read_d4rl_hdf5(path)))
  theirs = [episode["steps"] for _, episode in tfds_d4rl_utils.generate_examples(path)]
  assert len(ours) == len(theirs) == 5
  for mine, ref in zip(ours, theirs):
    for key in rlds.STEP_KEYS:
      np.testing.assert_allclose(np.asarray(mine[key], np.float64), np.asarray(ref[key], np.float64), err_msg=key)


def test_real_tfds_builder_prepared_from_local_hdf5(tmp_path):
  data = d4rl_arrays()
  path = str(tmp_path / "halfcheetah_medium.hdf5")
  d4rl.write_d4rl_hdf5(path, data)
  data_dir = str(tmp_path / "tfds")
  builder = d4rl.prepare_tfds_from_hdf5("halfcheetah-medium-v0", path, data_dir)
  assert builder.info.full_name.startswith("d4rl_mujoco_halfcheetah/v0-medium/")
  assert builder.info.splits["train"].num_examples == 3  # episodes
  lengths = sorted(len(e["steps"]) for e in tfds.as_numpy(builder.as_dataset(split="train")))
  assert lengths == [4, 5, 6]  # time-out 5, tail 4, terminal 5 + the observation-only terminal step
  got, source = d4rl.load_d4rl("halfcheetah-medium-v0", data_dir=data_dir, transitions="rlds")
  assert source == "tfds:d4rl_mujoco_halfcheetah/v0-medium"
  want = expected_transitions(data)
  # TFDS may store episodes in any order: compare as sets of rows.
  order_got = np.lexsort(got["observation"].T)
  order_want = np.lexsort(want["observation"].T)
  assert_transitions_equal({k: v[order_got] for k, v in got.items()}, {k: v[order_want] for k, v in want.items()})


def test_kitchen_hdf5_converted_to_rlds_reads_back_identically(tmp_path):
  data = d4rl_arrays(obs_dim=60, act_dim=9, n=12, terminal_rows=(), timeout_rows=(5,))
  data["rewards"] = np.floor(np.abs(data["rewards"]) * 2).astype(np.float32)  # subtasks done 0..4
  data["infos/qpos"] = np.zeros((12, 9), np.float32)
  path = str(tmp_path / "kitchen_microwave_kettle_bottomburner_light-v0.hdf5")
  d4rl.write_d4rl_hdf5(path, data)
  rlds_dir = d4rl.convert_hdf5_to_rlds(path, str(tmp_path / "rlds"), name="kitchen_mixed")
  builder = tfds.builder_from_directory(rlds_dir)
  assert builder.info.splits["train"].num_examples == 2
  from_rlds, _ = d4rl.load_d4rl("kitchen-mixed-v0", rlds_dir=rlds_dir)
  from_hdf5, _ = d4rl.load_d4rl("kitchen-mixed-v0", hdf5_path=path)
  assert_transitions_equal(from_rlds, from_hdf5)
  assert len(from_hdf5["reward"]) == 10


def test_reward_scaling_and_prefix():
  data = d4rl_arrays()
  arrays = d4rl.hdf5_transitions(data, "x")
  assert len(arrays["reward"]) == 12  # 13 rows i < N-1, minus the time-out row 9
  scaled = d4rl.scale_rewards(arrays, 4.0, -0.5)
  np.testing.assert_allclose(scaled["reward"], 4.0 * (arrays["reward"] - 0.5), rtol=1e-6)


def test_task_names():
  assert d4rl.tfds_name("hopper-medium-replay-v2") == "d4rl_mujoco_hopper/v2-medium-replay"
  assert d4rl.tfds_name("walker2d-medium-replay-v0") == "d4rl_mujoco_walker2d/v0-mixed"
  assert d4rl.tfds_name("antmaze-large-diverse-v0") == "d4rl_antmaze/large-diverse-v0"
  assert d4rl.tfds_name("pen-human-v1") == "d4rl_adroit_pen/v1-human"
  for name in tfds.builder("d4rl_mujoco_hopper").builder_configs:
    assert d4rl.tfds_name(f"hopper-{name.split('-', 1)[1]}-v{name[1]}").endswith(name) or "mixed" in name
  with pytest.raises(ConfigError, match="kitchen-mixed-v0.*hdf5_path"):
    d4rl.tfds_name("kitchen-mixed-v0")
  with pytest.raises(ConfigError, match="halfcheeta-medium-v2"):
    d4rl.tfds_name("halfcheeta-medium-v2")


def test_bad_input_messages(tmp_path):
  path = str(tmp_path / "bad.hdf5")
  data = d4rl_arrays()
  del data["timeouts"]
  with h5py.File(path, "w") as h5:
    for k, v in data.items():
      h5.create_dataset(k, data=v)
  with pytest.raises(DataError, match=r"bad.hdf5: missing key\(s\) \['timeouts'\]"):
    d4rl.load_d4rl("hopper-medium-v2", hdf5_path=path)

  data = d4rl_arrays()
  data["rewards"] = data["rewards"][:-1]
  with h5py.File(path, "w") as h5:
    for k, v in data.items():
      h5.create_dataset(k, data=v)
  with pytest.raises(DataError, match="'rewards' has 13 rows but 'observations' has 14"):
    d4rl.read_d4rl_hdf5(path)

  data = d4rl_arrays()
  data["observations"][3, 2] = np.nan
  with pytest.raises(DataError, match="'observations' holds NaN"):
    d4rl.write_d4rl_hdf5(path, data)

  with open(path, "wb") as f:
    f.write(b"\x89HDF\r\n truncated")
  with pytest.raises(DataError, match="bad.hdf5: not a readable hdf5 file"):
    d4rl.read_d4rl_hdf5(path)
  with pytest.raises(DataError, match="no such D4RL hdf5 file"):
    d4rl.read_d4rl_hdf5(str(tmp_path / "missing.hdf5"))
  with pytest.raises(DataError, match="is not prepared.*prepare_tfds_from_hdf5"):
    d4rl.load_d4rl("hopper-medium-v2", data_dir=str(tmp_path / "empty_tfds"))
  with pytest.raises(DataError, match="no dataset_info.json"):
    d4rl.load_d4rl("kitchen-mixed-v0", rlds_dir=str(tmp_path))
