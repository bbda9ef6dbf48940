"""The validation split: whole episodes held out, seeded, never in the replay; episode ids inferred from transitions
agree with Minari's explicit ones."""
import numpy as np
import pytest

from batch_rl_dr3.continuous import replay as replay_lib
from batch_rl_dr3.data import minari as minari_data
from batch_rl_dr3.data import splits
from batch_rl_dr3.errors import ConfigError
from tests import minari_fixtures


def episodic_arrays(lengths, terminal_every=2, seed=0):
  """Transitions of episodes with the given lengths; every `terminal_every`-th episode ends in a terminal."""
  rng = np.random.default_rng(seed)
  columns = {k: [] for k in ("observation", "action", "reward", "next_observation", "discount")}
  for i, length in enumerate(lengths):
    states = rng.normal(size=(length + 1, 3)).astype(np.float32)
    columns["observation"].append(states[:-1])
    columns["next_observation"].append(states[1:])
    columns["action"].append(rng.uniform(-1, 1, (length, 2)).astype(np.float32))
    columns["reward"].append(np.full(length, i, np.float32))  # the reward names the episode
    discount = np.ones(length, np.float32)
    if i % terminal_every == 0:
      discount[-1] = 0.0
    columns["discount"].append(discount)
  return {k: np.concatenate(v) for k, v in columns.items()}


def test_episode_ids_from_continuity(monkeypatch):
  arrays = episodic_arrays([3, 1, 4, 2, 5])
  np.testing.assert_array_equal(splits.episode_ids(arrays), arrays["reward"].astype(np.int64))
  monkeypatch.setattr(splits, "_CHUNK", 2)  # chunk borders inside and between episodes
  np.testing.assert_array_equal(splits.episode_ids(arrays), arrays["reward"].astype(np.int64))
  # With D4RL's qlearning_dataset rule s' after a terminal is the next row (continuity holds): discount 0 cuts.
  arrays["next_observation"][2] = arrays["observation"][3]
  np.testing.assert_array_equal(splits.episode_ids(arrays), arrays["reward"].astype(np.int64))


def test_inferred_ids_match_minari_ids(tmp_path, monkeypatch):
  monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
  minari_fixtures.record_hopper_dataset("test/hop-v0", episodes=8, max_episode_steps=25, seed=1)
  for rule in ("d4rl", "rlds"):
    data, _ = minari_data.load_minari(task="x", dataset_id="test/hop-v0", transitions=rule)
    explicit = data.pop("episode")
    inferred = splits.episode_ids(data)
    # the same partition (Minari's ids start at 0 and are consecutive here, as inferred ones)
    np.testing.assert_array_equal(inferred, explicit)


def test_hold_out_whole_episodes_seeded_and_never_sampled():
  lengths = list(range(1, 41))  # 40 episodes of 1..40 steps
  arrays = episodic_arrays(lengths)
  train, validation, info = splits.hold_out_episodes(arrays, 0.05, seed=3)
  assert len(info["validation_episodes"]) == 2 == len(np.unique(validation["reward"]))  # ceil(0.05 * 40)
  assert info["validation_transitions"] == sum(lengths[i] for i in info["validation_episodes"])
  assert info["train_transitions"] + info["validation_transitions"] == len(arrays["reward"])
  np.testing.assert_array_equal(np.unique(validation["reward"]), info["validation_episodes"])
  assert not set(np.unique(train["reward"])) & set(info["validation_episodes"])
  # seeded: the same seed the same episodes, another seed (here) other ones
  assert splits.hold_out_episodes(arrays, 0.05, seed=3)[2] == info
  assert splits.hold_out_episodes(arrays, 0.05, seed=4)[2]["validation_episodes"] != info["validation_episodes"]
  assert splits.hold_out_episodes(arrays, 0.05, seed=3, selection="last")[2]["validation_episodes"] == [38, 39]
  # The replay is built from the training arrays only: 200 batches never contain a validation transition.
  replay = replay_lib.TransitionReplay(train, batch_size=64, seed=0)
  assert replay.size == info["train_transitions"]
  held = {tuple(row) for row in validation["observation"]}
  sampled = np.concatenate([replay.sample()["observation"].numpy() for _ in range(200)])
  assert not any(tuple(row) in held for row in sampled)
  assert len({tuple(row) for row in sampled}) > 0.9 * replay.size  # the sampler does cover the training set


def test_fraction_zero_and_bad_settings():
  arrays = episodic_arrays([2, 2, 2])
  train, validation, info = splits.hold_out_episodes(arrays, 0.0, seed=0)
  assert len(train["reward"]) == 6 and len(validation["reward"]) == 0 and info["validation_transitions"] == 0
  with pytest.raises(ConfigError, match="validation_fraction=1.5"):
    splits.hold_out_episodes(arrays, 1.5, seed=0)
  with pytest.raises(ConfigError, match="holds out all 3 episodes"):
    splits.hold_out_episodes(arrays, 0.9, seed=0)
  with pytest.raises(ConfigError, match="validation_selection='first'"):
    splits.hold_out_episodes(arrays, 0.1, seed=0, selection="first")
