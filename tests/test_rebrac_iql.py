"""ReBRAC and IQL agents: one train step against an independent numpy computation from the weights before it,
ReBRAC's delayed actor and lagged actor target, the HL-Gauss head, IQL's cosine actor schedule and observation
standardisation inside its policy."""
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.policies import greedy_policy
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from batch_rl_dr3.continuous import iql
from batch_rl_dr3.continuous import losses
from batch_rl_dr3.continuous import rebrac

OBS, ACT, N = 4, 2, 32


def specs():
  return (ts.time_step_spec(tf.TensorSpec([OBS], tf.float32)),
          tensor_spec.BoundedTensorSpec([ACT], tf.float32, -1.0, 1.0))


def transitions(seed=0, n=N):
  rng = np.random.default_rng(seed)
  discount = np.ones(n, np.float32)
  discount[::5] = 0.0
  return {"observation": rng.normal(2.0, 3.0, size=(n, OBS)).astype(np.float32),
          "action": rng.uniform(-0.9, 0.9, (n, ACT)).astype(np.float32),
          "reward": rng.normal(size=n).astype(np.float32),
          "next_observation": rng.normal(2.0, 3.0, size=(n, OBS)).astype(np.float32),
          "discount": discount,
          "next_action": rng.uniform(-0.9, 0.9, (n, ACT)).astype(np.float32)}


def weights(network):
  return {v.name.split("/", 1)[1].split(":")[0]: v.numpy().copy() for v in network.variables}


def mlp(w, x, prefix, n_hidden, layer_norm=False):
  """Independent numpy forward: Dense -> ReLU [-> LayerNorm(eps 1e-6)] per hidden layer, then `head`."""
  for i in range(n_hidden):
    x = np.maximum(x @ w[f"{prefix}hidden_{i}/kernel"] + w[f"{prefix}hidden_{i}/bias"], 0.0)
    if layer_norm:
      x = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-6)
      x = x * w[f"layer_norm_{i}/gamma"] + w[f"layer_norm_{i}/beta"]
  return x


def critic_q(w, obs, act, n_hidden, layer_norm):
  h = mlp(w, np.concatenate([obs, act], 1), "", n_hidden, layer_norm)
  return (h @ w["head/kernel"] + w["head/bias"])[:, 0]


def small_rebrac(**kwargs):
  time_step_spec, action_spec = specs()
  tf.random.set_seed(0)
  return rebrac.ReBracAgent(time_step_spec, action_spec, transitions=transitions(), actor_hidden_units=(16, 16, 16),
                            critic_hidden_units=(16, 16), seed=1, **kwargs)


def test_rebrac_critic_step_by_hand_with_the_squared_error_head():
  agent = small_rebrac(critic_head="mse", policy_noise=0.0, gamma=0.9, critic_bc_coef=0.3)
  data = transitions(1)
  target_actor = weights(agent.target_actor_network)
  target_critics = [weights(c) for c in agent.target_critic_networks]
  online = [weights(c) for c in agent.critic_networks]
  metrics = agent.train_on_batch({k: tf.constant(v) for k, v in data.items()})
  h = mlp(target_actor, data["next_observation"], "ActorTorso/", 3)
  next_pi = np.tanh(h @ target_actor["action_head/kernel"] + target_actor["action_head/bias"])
  next_q = np.minimum(*[critic_q(w, data["next_observation"], next_pi, 2, True) for w in target_critics])
  y = data["reward"] + 0.9 * data["discount"] * (next_q - 0.3 * ((next_pi - data["next_action"]) ** 2).sum(1))
  assert float(metrics["target_q"]) == pytest.approx(y.mean(), rel=1e-4, abs=1e-5)
  loss = sum(np.mean((critic_q(w, data["observation"], data["action"], 2, True) - y) ** 2) for w in online)
  assert float(metrics["critic_loss"]) == pytest.approx(loss, rel=1e-4)


def test_rebrac_actor_every_other_step_and_its_target_lags_one_update():
  agent = small_rebrac(tau=0.25)
  batch = {k: tf.constant(v) for k, v in transitions(2).items()}
  actor, target = agent.actor_network, agent.target_actor_network
  theta0 = [v.numpy().copy() for v in actor.trainable_variables]
  critic0 = [v.numpy().copy() for v in agent.critic_networks[0].trainable_variables]
  agent.train_on_batch(batch)  # step 0: critic + actor + targets
  theta1 = [v.numpy().copy() for v in actor.trainable_variables]
  critic1 = [v.numpy().copy() for v in agent.critic_networks[0].trainable_variables]
  assert any(not np.allclose(a, b) for a, b in zip(theta0, theta1))
  # The actor target blends the parameters from *before* the actor step: tau*theta0 + (1-tau)*theta0 = theta0.
  for t, a in zip(target.trainable_variables, theta0):
    np.testing.assert_allclose(t.numpy(), a, rtol=1e-6, atol=1e-7)
  for t, c0, c1 in zip(agent.target_critic_networks[0].trainable_variables, critic0, critic1):
    np.testing.assert_allclose(t.numpy(), 0.25 * c1 + 0.75 * c0, rtol=1e-5, atol=1e-6)
  agent.train_on_batch(batch)  # step 1: critic only, no target update
  for v, a in zip(actor.trainable_variables, theta1):
    np.testing.assert_array_equal(v.numpy(), a)
  for t, a in zip(target.trainable_variables, theta0):
    np.testing.assert_allclose(t.numpy(), a, rtol=1e-6, atol=1e-7)
  agent.train_on_batch(batch)  # step 2: the target moves towards theta1
  for t, a0, a1 in zip(target.trainable_variables, theta0, theta1):
    np.testing.assert_allclose(t.numpy(), 0.25 * a1 + 0.75 * a0, rtol=1e-5, atol=1e-6)
  assert int(agent.actor_optimizer.iterations) == 2 and int(agent.critic_optimizer.iterations) == 3


def test_rebrac_hl_gauss_head_reads_q_as_the_expected_bin_value():
  agent = small_rebrac(num_classes=11, v_expand=0.1)
  g = rebrac.monte_carlo_returns(*(transitions()[k] for k in ("reward", "discount", "observation",
                                                               "next_observation")), gamma=0.99)
  width = g.max() - g.min()
  assert agent.value_support == pytest.approx((g.min() - 0.05 * width, g.max() + 0.05 * width), rel=1e-5)
  data = transitions(3)
  logits, _ = agent.critic_networks[0].features_and_q((data["observation"], data["action"]))
  assert logits.shape == (N, 11)
  edges = np.linspace(*agent.value_support, 12)
  centres = (edges[1:] + edges[:-1]) / 2
  p = tf.nn.softmax(logits).numpy()
  q, _ = agent.critic_features(data["observation"], data["action"])
  np.testing.assert_allclose(q.numpy(), (p * centres).sum(1), rtol=1e-5)
  metrics = agent.train_on_batch({k: tf.constant(v) for k, v in data.items()})
  assert np.isfinite(float(metrics["critic_loss"])) and float(metrics["lambda"]) > 0
  # The greedy policy is the deterministic actor (in [-1, 1]).
  action = greedy_policy.GreedyPolicy(agent.policy).action(ts.restart(tf.constant(data["observation"]), N)).action
  np.testing.assert_allclose(action.numpy(), agent.actor_features(data["observation"]).actions.numpy(), rtol=1e-6)


def small_iql(**kwargs):
  time_step_spec, action_spec = specs()
  tf.random.set_seed(0)
  return iql.IqlAgent(time_step_spec, action_spec, transitions=transitions(), hidden_units=(16, 16), seed=2,
                      **kwargs)


def test_iql_step_by_hand():
  agent = small_iql(expectile=0.8, temperature=2.0, gamma=0.9)
  data = transitions(4)
  stats = transitions()["observation"]
  mean, std = stats.mean(0), stats.std(0) + 1e-3
  obs, next_obs = (data["observation"] - mean) / std, (data["next_observation"] - mean) / std
  target_q = np.minimum(*[critic_q(weights(c), obs, data["action"], 2, False) for c in agent.target_critic_networks])
  v_before = weights(agent.value_network)
  v0 = (mlp(v_before, obs, "", 2) @ v_before["head/kernel"] + v_before["head/bias"])[:, 0]
  online = [weights(c) for c in agent.critic_networks]
  metrics = agent.train_on_batch({k: tf.constant(v) for k, v in data.items()})
  u = target_q - v0
  assert float(metrics["value_loss"]) == pytest.approx(np.mean(np.where(u > 0, 0.8, 0.2) * u ** 2), rel=1e-4)
  v_after = weights(agent.value_network)
  value = lambda x: (mlp(v_after, x, "", 2) @ v_after["head/kernel"] + v_after["head/bias"])[:, 0]
  advantage = target_q - value(obs)
  assert float(metrics["advantage"]) == pytest.approx(advantage.mean(), rel=1e-4, abs=1e-6)
  assert float(metrics["weights"]) == pytest.approx(np.minimum(np.exp(2.0 * advantage), 100).mean(), rel=1e-4)
  y = data["reward"] + 0.9 * data["discount"] * value(next_obs)
  loss = sum(np.mean((critic_q(w, obs, data["action"], 2, False) - y) ** 2) for w in online)
  assert float(metrics["critic_loss"]) == pytest.approx(loss, rel=1e-4)


def test_iql_policy_standardises_observations_and_acts_with_the_tanh_mean():
  agent = small_iql()
  data = transitions(5)
  stats = transitions()["observation"]
  normalized = (data["observation"] - stats.mean(0)) / (stats.std(0) + 1e-3)
  mean, log_std = agent.actor_network.mean_and_log_std(tf.constant(normalized, tf.float32))
  action = greedy_policy.GreedyPolicy(agent.policy).action(ts.restart(tf.constant(data["observation"]), N)).action
  np.testing.assert_allclose(action.numpy(), mean.numpy(), rtol=1e-5, atol=1e-6)
  assert np.all(np.abs(mean.numpy()) < 1)
  distribution, _ = agent.actor_network(tf.constant(normalized, tf.float32))
  sigma = np.exp(log_std.numpy())
  log_prob = np.sum(-0.5 * ((data["action"] - mean.numpy()) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi), 1)
  np.testing.assert_allclose(distribution.log_prob(data["action"]).numpy(), log_prob, rtol=1e-4)


def test_iql_actor_learning_rate_is_cosine_decayed_over_the_run():
  agent = small_iql(num_steps=8, actor_learning_rate=1e-3)
  batch = {k: tf.constant(v) for k, v in transitions(6).items()}
  rates = []
  for _ in range(4):
    rates.append(float(agent.actor_optimizer.learning_rate()))
    agent.train_on_batch(batch)
  np.testing.assert_allclose(rates, [1e-3 * 0.5 * (1 + np.cos(np.pi * t / 8)) for t in range(4)], rtol=1e-5)
  assert float(agent.critic_optimizer.learning_rate()) == pytest.approx(3e-4)


def test_expectile_value_converges_to_the_expectile():
  """The value loss's minimiser is the tau-expectile: gradient descent on a constant V reaches the value where
  tau * E[(x - v)+] = (1 - tau) * E[(v - x)+]."""
  x = tf.constant(np.random.default_rng(0).exponential(size=2000), tf.float32)
  v = tf.Variable(0.0)

  @tf.function
  def descend():
    for _ in tf.range(3000):
      with tf.GradientTape() as tape:
        loss = losses.expectile_loss(x - v, 0.9)
      v.assign_sub(0.5 * tape.gradient(loss, v))
  descend()
  xs = x.numpy()
  balance = 0.9 * np.maximum(xs - v.numpy(), 0).mean() - 0.1 * np.maximum(v.numpy() - xs, 0).mean()
  assert abs(balance) < 1e-4 and v.numpy() > np.mean(xs)


@pytest.mark.parametrize("recipe", [
    pytest.param(["continuous/study/rebrac.gin", "continuous/study/rebrac_comb.gin"], marks=pytest.mark.slow),
    ["continuous/study/iql.gin", "continuous/study/iql_comb.gin"]], ids=["rebrac", "iql"])
def test_study_recipe_with_dr3_trains_end_to_end_from_a_d4rl_file(tmp_path, recipe):
  """python -m batch_rl_dr3.train's path: the study's gin + the best combination + continuous/dr3_cog.gin on a
  D4RL-format hopper file (next actions from the loader), evaluation in gymnasium's Hopper."""
  import json
  import os
  import gin
  import pandas as pd
  from batch_rl_dr3 import train
  from batch_rl_dr3.data import d4rl
  rng = np.random.default_rng(0)
  n = 300
  data = {"observations": rng.normal(size=(n, 11)).astype(np.float32),
          "actions": rng.uniform(-1, 1, (n, 3)).astype(np.float32), "rewards": rng.normal(size=n).astype(np.float32),
          "terminals": np.zeros(n, bool), "timeouts": np.zeros(n, bool)}
  data["timeouts"][99::100] = True
  path = str(tmp_path / "hopper_medium-v2.hdf5")
  d4rl.write_d4rl_hdf5(path, data)
  base_dir = str(tmp_path / "run")
  bindings = ["DATASET = 'hopper-medium-v2'", f"load_d4rl.hdf5_path = '{path}'", "run_experiment.num_iterations = 2",
              "run_experiment.gradient_steps_per_iteration = 2", "run_experiment.tensorboard = False",
              "ContinuousExperiment.batch_size = 16", "ContinuousExperiment.eval_episodes = 1",
              "ContinuousExperiment.eval_max_episode_steps = 10", "ReBracAgent.actor_hidden_units = (32, 32, 32)",
              "ReBracAgent.critic_hidden_units = (32, 32)", "IqlAgent.hidden_units = (32, 32)"]
  try:
    train.train(base_dir, recipe + ["continuous/dr3_cog.gin"], bindings)
  finally:
    gin.clear_config()
  rows = pd.read_csv(os.path.join(base_dir, "metrics.csv"))
  for column in ("train/critic_loss", "train/actor_loss", "train/dr3", "train/dot_product", "eval/return"):
    assert column in rows and np.all(np.isfinite(rows[column])), column
  info = json.load(open(os.path.join(base_dir, "run_info.json")))
  variant = "ReBRAC+LN+DO+GrN(tuned)" if "rebrac" in recipe[0] else "IQL+LN+DO+WD(tuned)"
  assert info["label"].startswith(variant + "+DR3 (c0=0.001")  # the one label rule (batch_rl_dr3.labels)
  assert info["dr3_coefficient"] == 0.001 and info["task"] == "hopper-medium-v2"
