"""Minari data: datasets written locally with minari's own API (DataCollector, create_dataset_from_buffers), read by
`load_minari` and compared with hand-built transitions and with the D4RL hdf5 path on the same episodes."""
import dataclasses
import os

import gymnasium as gym
import minari
import numpy as np
import pytest
from minari.data_collector.episode_buffer import EpisodeBuffer

from batch_rl_dr3.data import d4rl
from batch_rl_dr3.data import minari as minari_data
from batch_rl_dr3.data import rlds
from batch_rl_dr3.errors import ConfigError, DataError
from tests import minari_fixtures

OBS_SPACE = gym.spaces.Box(-np.inf, np.inf, (3,), np.float64)
ACT_SPACE = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


@pytest.fixture(autouse=True)
def minari_root(tmp_path, monkeypatch):
  root = tmp_path / "minari_root"
  monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
  return root


def toy_episodes():
  """Three episodes: terminated after 4 steps, truncated after 3, terminated after 1 (values distinct per step)."""
  specs = [(4, "term"), (3, "trunc"), (1, "term")]
  episodes = []
  for i, (steps, end) in enumerate(specs):
    obs = [np.array([i, t, 0.5 * t], np.float64) for t in range(steps + 1)]
    actions = [np.array([0.1 * t, -0.1 * i], np.float32) for t in range(steps)]
    rewards = [float(10 * i + t) for t in range(steps)]
    terminations = [end == "term" and t == steps - 1 for t in range(steps)]
    truncations = [end == "trunc" and t == steps - 1 for t in range(steps)]
    episodes.append(EpisodeBuffer(id=i, observations=obs, actions=actions, rewards=rewards,
                                  terminations=terminations, truncations=truncations))
  return episodes


def write(dataset_id, episodes, data_format="hdf5", **kwargs):
  kwargs.setdefault("observation_space", OBS_SPACE)
  kwargs.setdefault("action_space", ACT_SPACE)
  return minari.create_dataset_from_buffers(dataset_id, buffer=episodes, algorithm_name="scripted",
                                            author="test", author_email="t@example.com",
                                            code_permalink="https://example.com", data_format=data_format,
                                            **kwargs)


@pytest.mark.parametrize("data_format", ["hdf5", "arrow"])
def test_transitions_by_hand(data_format):
  write("test/toy-v0", toy_episodes(), data_format)
  data, source = minari_data.load_minari(task="toy", dataset_id="test/toy-v0", transitions="rlds")
  assert source == "minari:test/toy-v0"
  # Every step of every episode is a transition (o_T is stored, so the truncated episode keeps its last one).
  assert len(data["reward"]) == 4 + 3 + 1
  np.testing.assert_array_equal(data["episode"], [0, 0, 0, 0, 1, 1, 1, 2])
  np.testing.assert_allclose(data["reward"], [0, 1, 2, 3, 10, 11, 12, 20])
  # discount 0 only where the episode terminated; the truncation at the end of episode 1 bootstraps.
  np.testing.assert_array_equal(data["discount"], [1, 1, 1, 0, 1, 1, 1, 0])
  np.testing.assert_allclose(data["observation"][3], [0, 3, 1.5])
  np.testing.assert_allclose(data["next_observation"][3], [0, 4, 2.0])  # o_T of the terminated episode
  np.testing.assert_allclose(data["next_observation"][6], [1, 3, 1.5])  # o_T of the truncated episode
  np.testing.assert_allclose(data["observation"][4], [1, 0, 0])
  # next_action: a_{t+1} in the episode, a_t at its last step.
  np.testing.assert_allclose(data["next_action"][:4], [[0.1, 0], [0.2, 0], [0.3, 0], [0.3, 0]], atol=1e-7)
  np.testing.assert_allclose(data["next_action"][6], [0.2, -0.1], atol=1e-7)
  assert data["observation"].dtype == np.float32 and data["reward"].dtype == np.float32
  # The default rule drops the step where episode 1 was truncated (D4RL's qlearning_dataset drops time-out rows).
  d4rl_rule, _ = minari_data.load_minari(task="toy", dataset_id="test/toy-v0")
  keep = np.arange(8) != 6
  for key in data:
    np.testing.assert_array_equal(d4rl_rule[key], data[key][keep], err_msg=key)


def test_same_transitions_as_the_d4rl_path(tmp_path):
  """The same episodes as a D4RL hdf5 file with next_observations give exactly the same transitions under the 'rlds'
  rule; under the default 'd4rl' rule the same rows, with s' of a terminal step the true o_T where D4RL's
  qlearning_dataset puts the next episode's first row (a placeholder: discount 0)."""
  episodes = toy_episodes()
  write("test/toy-v0", episodes)
  cat = lambda key, sl: np.concatenate([np.asarray(getattr(e, key))[sl] for e in episodes])
  arrays = {"observations": cat("observations", slice(0, -1)), "next_observations": cat("observations", slice(1, None)),
            "actions": cat("actions", slice(None)), "rewards": cat("rewards", slice(None)),
            "terminals": cat("terminations", slice(None)), "timeouts": cat("truncations", slice(None))}
  d4rl.write_d4rl_hdf5(str(tmp_path / "toy.hdf5"), arrays)
  expected, _ = d4rl.load_d4rl(task="toy", hdf5_path=str(tmp_path / "toy.hdf5"), transitions="rlds")
  got, _ = minari_data.load_minari(task="toy", dataset_id="test/toy-v0", transitions="rlds")
  for key in rlds.TRANSITION_KEYS:
    np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
  expected, _ = d4rl.load_d4rl(task="toy", hdf5_path=str(tmp_path / "toy.hdf5"))
  got, _ = minari_data.load_minari(task="toy", dataset_id="test/toy-v0")
  assert len(expected["reward"]) == 6  # D4RL also drops the file's last row (episode 2's only step)
  for key in rlds.TRANSITION_KEYS:
    rows = got[key][:6]
    if key == "next_observation":
      live = expected["discount"] == 1.0
      rows, expected[key] = rows[live], expected[key][live]
    np.testing.assert_array_equal(rows, expected[key], err_msg=key)


def test_data_collector_on_hopper_terminations_and_truncations(tmp_path):
  """A dataset recorded by minari's DataCollector in gymnasium's Hopper: T+1 observations per episode, discount 0
  exactly at the environment's terminations, and folder loading equal to id loading."""
  dataset = minari_fixtures.record_hopper_dataset("test/hopper-v0", episodes=6, max_episode_steps=30)
  episodes = list(dataset.iterate_episodes())
  data, _ = minari_data.load_minari(task="hopper-random-v2", dataset_id="test/hopper-v0", transitions="rlds")
  assert len(data["reward"]) == sum(len(e.actions) for e in episodes) == dataset.total_steps
  kinds = {bool(e.terminations[-1]) for e in episodes} | {"trunc" for e in episodes if e.truncations[-1]}
  assert {True, "trunc"} <= kinds  # both endings occur, so both are checked below
  start = 0
  for e in episodes:
    steps = len(e.actions)
    assert len(e.observations) == steps + 1
    part = slice(start, start + steps)
    np.testing.assert_allclose(data["next_observation"][part], e.observations[1:], rtol=1e-6)
    np.testing.assert_array_equal(data["discount"][part], 1.0 - e.terminations)
    assert data["discount"][start + steps - 1] == (0.0 if e.terminations[-1] else 1.0)
    start += steps
  folder = os.path.join(os.environ["MINARI_DATASETS_PATH"], "test", "hopper-v0")
  by_path, source = minari_data.load_minari(task="hopper-random-v2", path=folder, transitions="rlds")
  assert source == f"minari:{folder}"
  for key in data:
    np.testing.assert_array_equal(by_path[key], data[key])


def test_dict_observations_flatten_to_the_d4rl_antmaze_layout():
  space = gym.spaces.Dict({"observation": gym.spaces.Box(-np.inf, np.inf, (4,), np.float64),
                           "achieved_goal": gym.spaces.Box(-np.inf, np.inf, (2,), np.float64),
                           "desired_goal": gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)})
  steps = 3
  obs = {"observation": np.arange((steps + 1) * 4, dtype=np.float64).reshape(steps + 1, 4),
         "achieved_goal": -np.arange((steps + 1) * 2, dtype=np.float64).reshape(steps + 1, 2) - 1,
         "desired_goal": np.full((steps + 1, 2), 9.0)}
  buffer = EpisodeBuffer(id=0, observations=obs, actions=[np.zeros(2, np.float32)] * steps, rewards=[0.0] * steps,
                         terminations=[False, False, True], truncations=[False] * steps)
  write("test/maze-v0", [buffer], observation_space=space)
  data, _ = minari_data.load_minari(task="antmaze-umaze-v2", dataset_id="test/maze-v0")
  # (x, y) first, then the ant's values; the goal is not part of D4RL's observation.
  np.testing.assert_allclose(data["observation"][1], [-3, -4, 4, 5, 6, 7])
  np.testing.assert_allclose(data["next_observation"][2], [-7, -8, 12, 13, 14, 15])
  keys = ("observation", "desired_goal")
  data, _ = minari_data.load_minari(task="x", dataset_id="test/maze-v0", observation_keys=keys)
  np.testing.assert_allclose(data["observation"][0], [0, 1, 2, 3, 9, 9])


def test_medium_expert_concatenates_medium_and_expert_with_distinct_episode_ids(minari_root):
  episodes = toy_episodes()
  write("mujoco/hopper/medium-v0", episodes[:2])
  write("mujoco/hopper/expert-v0", [dataclasses.replace(e, id=i) for i, e in enumerate(episodes[2:] + episodes[:1])])
  data, source = minari_data.load_minari(task="hopper-medium-expert-v2", transitions="rlds")
  assert source == "minari:mujoco/hopper/medium-v0+mujoco/hopper/expert-v0"
  np.testing.assert_array_equal(data["episode"], [0] * 4 + [1] * 3 + [2] + [3] * 4)
  np.testing.assert_allclose(data["reward"], [0, 1, 2, 3, 10, 11, 12, 20, 0, 1, 2, 3])


def test_bad_input_names_the_culprit(minari_root, tmp_path):
  with pytest.raises(DataError, match=r"'D4RL/door/human-v2' under .*minari_root.*minari download"):
    minari_data.load_minari(task="door-human-v1")
  with pytest.raises(ConfigError, match="hopper-medium-replay-v2.*no Minari equivalent"):
    minari_data.load_minari(task="hopper-medium-replay-v2")
  with pytest.raises(ConfigError, match="no Minari id known"):
    minari_data.load_minari(task="breakout")
  with pytest.raises(DataError, match="load_minari.path=.*no Minari dataset"):
    minari_data.load_minari(task="x", path=str(tmp_path))
  with pytest.raises(ConfigError, match="load_minari.transitions='all'"):
    minari_data.load_minari(task="x", path=str(tmp_path), transitions="all")
  with pytest.raises(ConfigError, match="exactly one of dataset_id and path"):
    minari_data.open_dataset(dataset_id="a/b-v0", path=str(tmp_path))


def test_d4rl_names_map_to_minari_ids():
  assert minari_data.minari_ids_for("antmaze-large-diverse-v2") == ("D4RL/antmaze/large-diverse-v1",)
  assert minari_data.minari_ids_for("relocate-cloned-v1") == ("D4RL/relocate/cloned-v2",)
  assert minari_data.minari_ids_for("walker2d-expert-v2") == ("mujoco/walker2d/expert-v0",)
  # The 36 datasets of the study: 6 x 3 locomotion + 6 AntMaze + 12 Adroit; 12 locomotion ones have no single id.
  study = [k for k in minari_data.MINARI_IDS if not k.startswith("kitchen")]
  assert len(study) == 36
  assert sum(minari_data.MINARI_IDS[k] is None for k in study) == 12  # random, medium-expert, the two replays
  assert len(minari_data.MINARI_CONCATENATIONS) == 3  # medium-expert = medium + expert
