"""The study's protocol inside ContinuousExperiment: the validation split (recorded, never trained on), the actor
diagnostics per batch against numpy on the actor's own pre-activations, the plasticity probe leaving the actor as
it was, and the noisy evaluations in Hopper."""
import functools
import os

import gin
import numpy as np
import pytest
import tensorflow as tf

from batch_rl_dr3 import runner
from batch_rl_dr3.continuous import actor_probes
from batch_rl_dr3.continuous import experiment

OBS, ACT = 11, 3  # Hopper's layout, so the evaluation can roll out
EPISODES, LENGTH = 20, 10


def episodic_dataset(task):
  rng = np.random.default_rng(0)
  n = EPISODES * LENGTH
  states = rng.normal(size=(EPISODES, LENGTH + 1, OBS)).astype(np.float32)
  actions = rng.uniform(-0.9, 0.9, (EPISODES, LENGTH, ACT)).astype(np.float32)
  discount = np.ones((EPISODES, LENGTH), np.float32)
  discount[::2, -1] = 0.0
  return ({"observation": states[:, :-1].reshape(n, OBS), "next_observation": states[:, 1:].reshape(n, OBS),
           "action": actions.reshape(n, ACT), "next_action": np.roll(actions, -1, axis=1).reshape(n, ACT),
           "reward": rng.normal(size=n).astype(np.float32), "discount": discount.reshape(n)}, f"synthetic:{task}")


@pytest.fixture(autouse=True)
def small_nets():
  gin.clear_config()
  gin.parse_config(["ReBracAgent.actor_hidden_units = (16, 16, 16)", "ReBracAgent.critic_hidden_units = (16, 16)",
                    "ReBracAgent.critic_head = 'mse'"])
  yield
  gin.clear_config()


def make(**kwargs):
  kwargs = dict(dict(seed=0, task="hopper-medium-v2", agent_name="rebrac", load_dataset=episodic_dataset,
                     batch_size=32, eval_episodes=0, validation_fraction=0.1, actor_diagnostics=True,
                     plasticity_steps=20), **kwargs)
  return experiment.ContinuousExperiment(**kwargs)


def numpy_metrics(exp, observations, actions):
  out = exp.agent.actor_features(tf.constant(observations), training=False)
  trunk = out.pre_activations[-1].numpy().astype(np.float64)
  energy = np.cumsum(np.linalg.svd(trunk, compute_uv=False) ** 2)
  return {"dead_neurons_frac": np.mean(np.all(trunk <= 0, axis=0)),
          "feature_norms": np.linalg.norm(trunk, axis=1).mean(),
          "feature_means": trunk.mean(axis=1).mean(), "feature_stds": trunk.std(axis=1).mean(),
          "pca_rank": int(np.argmax(energy >= 0.99 * energy[-1])) + 1,
          "action_mse": np.mean((out.actions.numpy() - actions) ** 2)}


def test_validation_split_diagnostics_and_plasticity():
  exp = make()
  info = exp.run_info()["validation"]
  assert len(info["validation_episodes"]) == 2 and info["validation_transitions"] == 2 * LENGTH  # ceil(0.1 * 20)
  assert exp.replay.size == info["train_transitions"] == (EPISODES - 2) * LENGTH
  data, _ = episodic_dataset("x")
  held = np.isin(np.arange(EPISODES * LENGTH) // LENGTH, info["validation_episodes"])
  held_rows = {tuple(r) for r in data["observation"][held]}
  for _ in range(30):  # the training batches never hold a validation transition
    assert not any(tuple(r) in held_rows for r in exp.replay.sample()["observation"].numpy())
  before = [v.numpy().copy() for v in exp.agent.actor_network.variables]
  iterations = int(exp.agent.actor_optimizer.iterations)  # the probe steps it, then restores it
  metrics = exp.evaluate(0)
  expected = {"validation": (data["observation"][held], data["action"][held]),
              # the first n training transitions in dataset order, n = the validation size
              "train": (data["observation"][~held][:2 * LENGTH], data["action"][~held][:2 * LENGTH])}
  for batch, (obs, act) in expected.items():
    for key, value in numpy_metrics(exp, obs, act).items():
      assert metrics[f"actor_{batch}/{key}"] == pytest.approx(value, rel=1e-4, abs=1e-6), (batch, key)
  assert {"actor_random/pca_rank", "actor_random/action_mse", "actor_train/dead_neurons_frac/2"} <= set(metrics)
  assert "actor_eval_states/pca_rank" not in metrics  # no rollouts with eval_episodes=0
  # plasticity: 20 BC steps on the validation split lower its loss, and the actor is left as it was.
  assert metrics["plasticity/start_mse"] == pytest.approx(numpy_metrics(exp, *expected["validation"])["action_mse"],
                                                          rel=1e-4)
  assert metrics["plasticity/bc_loss"] < metrics["plasticity/start_mse"]
  for x, y in zip(before, exp.agent.actor_network.variables):
    np.testing.assert_array_equal(x, y.numpy())
  assert int(exp.agent.actor_optimizer.iterations) == iterations


def test_noisy_evaluations_and_eval_states_in_hopper():
  exp = make(eval_episodes=1, eval_max_episode_steps=4, noisy_evaluation=True, plasticity_steps=0,
             validation_fraction=0.0)
  metrics = exp.evaluate(3)
  assert "validation" not in exp.run_info() and "plasticity/bc_loss" not in metrics
  for prefix in ("", "action_noise/", "state_noise/"):
    assert np.isfinite(metrics[prefix + "return"]) and np.isfinite(metrics[prefix + "normalized_score"])
  assert metrics["action_noise/return"] != metrics["return"] != metrics["state_noise/return"]
  assert {"actor_eval_states/pca_rank", "actor_train/pca_rank", "actor_random/pca_rank"} <= set(metrics)
  assert 1 <= metrics["actor_eval_states/pca_rank"] <= 4  # 4 visited states


def test_state_noise_is_in_the_units_the_actor_sees():
  rebrac_exp = make(plasticity_steps=0, validation_fraction=0.0, actor_diagnostics=False)
  assert actor_probes.noisy_evaluations(rebrac_exp.agent) == {"action_noise": {"action_noise": 0.2},
                                                              "state_noise": {"state_noise": 0.05}}
  gin.parse_config(["IqlAgent.hidden_units = (16, 16)"])
  iql_exp = make(agent_name="iql", plasticity_steps=0, validation_fraction=0.0, actor_diagnostics=False)
  data, _ = episodic_dataset("x")
  noise = actor_probes.noisy_evaluations(iql_exp.agent)["state_noise"]["state_noise"]
  np.testing.assert_allclose(noise, 0.05 * (data["observation"].std(axis=0) + 1e-3), rtol=1e-5)


@pytest.mark.slow  # four runs through the runner (~90 s on the shared CPU)
def test_diagnostics_leave_training_as_it_was(tmp_path):
  """Through the runner: with the actor diagnostics and the plasticity probe on, the training metrics of every
  iteration equal those of a run without them (the probe trains a copy in effect), and a resumed run equals both."""
  kwargs = dict(gradient_steps_per_iteration=4, tensorboard=False, log_every_steps=4)
  rows = {}
  for name, on in (("plain", False), ("probed", True)):
    create = functools.partial(make, actor_diagnostics=on, plasticity_steps=10, validation_fraction=0.1)
    rows[name] = runner.run_experiment(str(tmp_path / name), create_experiment=create, num_iterations=3, **kwargs)
  create = functools.partial(make, plasticity_steps=10, validation_fraction=0.1)
  runner.run_experiment(str(tmp_path / "resumed"), create_experiment=create, num_iterations=2, **kwargs)
  os.remove(tmp_path / "resumed" / runner.DONE_FILE)
  rows["resumed"] = runner.run_experiment(str(tmp_path / "resumed"), create_experiment=create, num_iterations=3,
                                          **kwargs)
  train_keys = [k for k in rows["plain"] if k.startswith("train/")]
  assert train_keys and "eval/plasticity/bc_loss" in rows["probed"]
  for key in train_keys:
    assert rows["probed"][key] == pytest.approx(rows["plain"][key], rel=1e-5, abs=1e-7), key
    assert rows["resumed"][key] == pytest.approx(rows["probed"][key], rel=1e-5, abs=1e-7), key
  assert rows["resumed"]["eval/plasticity/bc_loss"] == pytest.approx(rows["probed"]["eval/plasticity/bc_loss"],
                                                                     rel=1e-4)
