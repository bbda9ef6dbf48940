"""Continuous path throughput: our CQL-SAC + DR3 train step vs tf-agents' plain `CqlSacAgent.train`.

Entry `cql_sac_dr3_vs_tfagents`: gradient steps per second of `ContinuousExperiment.train_step` (Dr3CqlSacAgent
with c0 = 0.001, sampling from the in-memory replay, one tf.function) divided by that of tf-agents' CqlSacAgent
with tf-agents' own networks (CriticNetwork, ActorDistributionNetwork + TanhNormalProjectionNetwork, same layer
sizes) trained on batches drawn from the same replay, also inside one tf.function. Both use CQL(H) with 10
samples, alpha 5, batch 256, HalfCheetah-sized data (17-d observations, 6-d actions). ratio = ours / theirs:
above 1 is faster; DR3 costs two extra critic passes on (s', a'), so ~0.8-1 is the expected range. The two are
timed in alternating single steps after both have been traced, so load changes hit both alike.
"""
import functools
import os
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import batch_rl_dr3  # noqa: E402,F401
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tf_agents.agents.cql import cql_sac_agent  # noqa: E402
from tf_agents.agents.ddpg import critic_network  # noqa: E402
from tf_agents.agents.sac import sac_agent  # noqa: E402
from tf_agents.agents.sac import tanh_normal_projection_network  # noqa: E402
from tf_agents.networks import actor_distribution_network  # noqa: E402

from batch_rl_dr3.continuous import experiment  # noqa: E402
from batch_rl_dr3.continuous import replay as replay_lib  # noqa: E402

OBS_DIM, ACT_DIM, HIDDEN = 17, 6, (256, 256, 256)


def _dataset(task, n=20_000):
  rng = np.random.default_rng(0)
  obs = rng.normal(size=(n, OBS_DIM)).astype(np.float32)
  return ({"observation": obs, "action": rng.uniform(-1, 1, (n, ACT_DIM)).astype(np.float32),
           "reward": rng.normal(size=n).astype(np.float32), "next_observation": obs + 0.01,
           "discount": np.ones(n, np.float32)}, f"synthetic:{task}")


def _tf_agents_step(exp):
  """tf-agents' CqlSacAgent with its own networks, fed from the same replay."""
  time_step_spec, action_spec = exp.agent.time_step_spec, exp.agent.action_spec
  critic = critic_network.CriticNetwork((time_step_spec.observation, action_spec), joint_fc_layer_params=HIDDEN,
                                        kernel_initializer="glorot_uniform",
                                        last_kernel_initializer="glorot_uniform")
  actor = actor_distribution_network.ActorDistributionNetwork(
      time_step_spec.observation, action_spec, fc_layer_params=HIDDEN,
      continuous_projection_net=lambda spec: tanh_normal_projection_network.TanhNormalProjectionNetwork(
          spec, std_transform=sac_agent.std_clip_transform))
  agent = cql_sac_agent.CqlSacAgent(
      time_step_spec, action_spec, critic_network=critic, actor_network=actor,
      actor_optimizer=tf.keras.optimizers.Adam(1e-4), critic_optimizer=tf.keras.optimizers.Adam(3e-4),
      alpha_optimizer=tf.keras.optimizers.Adam(1e-4), cql_alpha=5.0, num_cql_samples=10,
      include_critic_entropy_term=False, use_lagrange_cql_alpha=False, gamma=0.99, target_update_tau=0.005)
  agent.initialize()

  @tf.function
  def step():
    return agent.train(replay_lib.to_tf_agents_transition(exp.replay.sample())).loss
  return step


def _timed(step):
  start = time.perf_counter()
  float(tf.nest.flatten(step())[0])  # wait for the step to finish
  return time.perf_counter() - start


def run(quick: bool):
  import gin  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  gin.parse_config([f"FeatureCriticNetwork.hidden_units = {HIDDEN}", f"RegularizedActorNetwork.hidden_units = {HIDDEN}",
                    "Dr3CqlSacAgent.cql_alpha = 5.0", "Dr3CqlSacAgent.num_cql_samples = 10"])
  ours_exp = experiment.ContinuousExperiment(seed=0, task="halfcheetah-medium-v2", agent_name="cql_sac",
                                             load_dataset=_dataset, batch_size=256, eval_episodes=0,
                                             dr3_coefficient=0.001)
  theirs = _tf_agents_step(ours_exp)
  ours = ours_exp.train_step
  print("   tracing both train steps ...", flush=True)
  steps, rounds = (20, 3) if quick else (100, 5)
  # Single steps alternate, so a load change on this shared machine hits both sides alike.
  ours_rates, theirs_rates = _side_by_side(ours, theirs, steps, rounds, "cql_sac vs tf-agents")
  ours_rate, theirs_rate = float(np.median(ours_rates)), float(np.median(theirs_rates))
  gin.clear_config()
  return [{"name": "cql_sac_dr3_vs_tfagents", "value": ours_rate, "unit": "gradient steps/s",
           "baseline": theirs_rate, "ratio": ours_rate / theirs_rate,
           "goal": "ours/tf-agents CqlSacAgent.train, higher is better (DR3 adds 2 critic passes)"}] + run_study(quick)




# ------------------------------------------------------------------------------------------ the actor study
# Entries `rebrac_vs_bare_step` (batch 1024) and `iql_vs_bare_step` (batch 256): gradient steps per second of
# ContinuousExperiment.train_step (sampling from the replay, agent.train_on_batch, one tf.function) divided by that
# of the same math written as one bare tf.function over plain variables (copies of the agent's weights: matmuls,
# LayerNorm, the HL-Gauss target, Adam, Polyak updates inline, nothing of ours or of tf-agents). Goal: >= 1/1.1.
# Entries `rebrac_cost_<REG>`: ReBRAC's step time with one actor regularizer on divided by the unregularized step
# (the study's profile values), i.e. what each regularizer costs (> 1 = slower).

STUDY_OBS, STUDY_ACT = 17, 6
REGULARIZERS = {"LN": "layer_norm = True", "FN": "feature_norm = True", "GN": "group_norm = True",
                "SN": "spectral_norm = True", "BN": "batch_norm = True", "DO": "dropout_rate = 0.1",
                "InN": "input_noise = 0.003", "BCN": "bc_noise = 0.01", "GrN": "grad_noise = 0.01",
                "L2": "weight_decay = 1e-3", "L1": ["weight_decay = 1e-5", "l1_ratio = 1.0"],
                "EN": ["weight_decay = 1e-4", "l1_ratio = 0.5"], "Sch": "schedule = 'linear'"}


def _study_dataset(task, n=20_000):
  rng = np.random.default_rng(0)
  obs = rng.normal(size=(n, STUDY_OBS)).astype(np.float32)
  return ({"observation": obs, "action": rng.uniform(-1, 1, (n, STUDY_ACT)).astype(np.float32),
           "reward": rng.normal(size=n).astype(np.float32), "next_observation": obs + 0.01,
           "discount": np.ones(n, np.float32), "next_action": rng.uniform(-1, 1, (n, STUDY_ACT)).astype(np.float32)},
          f"synthetic:{task}")


def _study_experiment(agent_name, batch_size, bindings=()):
  import gin  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  gin.parse_config(list(bindings))
  exp = experiment.ContinuousExperiment(seed=0, task="halfcheetah-medium-v2", agent_name=agent_name,
                                        load_dataset=_study_dataset, batch_size=batch_size, eval_episodes=0)
  gin.clear_config()
  return exp


def _copies(network):
  return [tf.Variable(v) for v in network.trainable_variables]


def _dense_stack(x, variables, layer_norm):
  """Hidden layers [kernel, bias, (gamma, beta)] -> ReLU (-> LayerNorm eps 1e-6); the last pair is the head."""
  per = 4 if layer_norm else 2
  hidden, head = variables[:-2], variables[-2:]
  # Keras orders the critic's variables as all Dense layers first, then all LayerNorms.
  n = len(hidden) // per
  dense = [hidden[2 * i: 2 * i + 2] for i in range(n)]
  norms = [hidden[2 * n + 2 * i: 2 * n + 2 * i + 2] for i in range(n)] if layer_norm else [None] * n
  for (kernel, bias), norm in zip(dense, norms):
    x = tf.nn.relu(tf.matmul(x, kernel) + bias)
    if norm is not None:
      mean, var = tf.nn.moments(x, [-1], keepdims=True)
      x = (x - mean) * tf.math.rsqrt(var + 1e-6) * norm[0] + norm[1]
  return tf.matmul(x, head[0]) + head[1]


class _BareAdam:
  def __init__(self, variables, lr):
    self.variables, self.lr = variables, lr
    self.m = [tf.Variable(tf.zeros_like(v)) for v in variables]
    self.v = [tf.Variable(tf.zeros_like(v)) for v in variables]
    self.t = tf.Variable(0.0)

  def apply(self, grads):
    t = self.t.assign_add(1.0)
    c1, c2 = 1.0 - tf.pow(0.9, t), 1.0 - tf.pow(0.999, t)
    for g, var, m, v in zip(grads, self.variables, self.m, self.v):
      m.assign(0.9 * m + 0.1 * g)
      v.assign(0.999 * v + 0.001 * tf.square(g))
      var.assign_sub(self.lr * (m / c1) / (tf.sqrt(v / c2) + 1e-8))


def _polyak(source, target, tau):
  for s, t in zip(source, target):
    t.assign(tau * s + (1.0 - tau) * t)


def _bare_actor(variables, s):
  return tf.tanh(_dense_stack(s, variables, False))


def _bare_hl_gauss_q(variables, s, a, centres):
  return tf.reduce_sum(tf.nn.softmax(_dense_stack(tf.concat([s, a], -1), variables, True)) * centres, -1)


def _bare_rebrac_step(exp):
  """ReBRAC-CE (HL-Gauss, 2 LayerNorm critics, policy_freq 2) written out in one tf.function."""
  agent = exp.agent
  actor, target_actor = _copies(agent.actor_network), _copies(agent.target_actor_network)
  critics = [_copies(c) for c in agent.critic_networks]
  targets = [_copies(c) for c in agent.target_critic_networks]
  critic_vars = critics[0] + critics[1]
  actor_opt, critic_opt = _BareAdam(actor, 1e-3), _BareAdam(critic_vars, 1e-3)
  v_min, v_max = agent.value_support
  edges = tf.linspace(v_min, v_max, 202)
  centres = (edges[1:] + edges[:-1]) / 2
  sigma = 0.75 * (v_max - v_min) / 201
  rng = tf.random.Generator.from_seed(0)
  step_count = tf.Variable(0, dtype=tf.int64)

  q = functools.partial(_bare_hl_gauss_q, centres=centres)

  def actor_update(s, a):
    with tf.GradientTape() as tape:
      pa = _bare_actor(actor, s)
      qv = tf.minimum(q(critics[0], s, pa), q(critics[1], s, pa))
      lam = tf.stop_gradient(1.0 / tf.reduce_mean(tf.abs(qv)))
      loss = tf.reduce_mean(0.001 * tf.reduce_sum(tf.square(pa - a), -1) - lam * qv)
    grads = tape.gradient(loss, actor)
    _polyak(actor, target_actor, 0.005)
    actor_opt.apply(grads)
    for c, t in zip(critics, targets):
      _polyak(c, t, 0.005)
    return loss

  @tf.function
  def step():
    b = exp.replay.sample()
    s, a, s2, a2 = b["observation"], b["action"], b["next_observation"], b["next_action"]
    na = _bare_actor(target_actor, s2)
    na = tf.clip_by_value(na + tf.clip_by_value(0.2 * rng.normal(tf.shape(na)), -0.5, 0.5), -1.0, 1.0)
    nq = tf.minimum(q(targets[0], s2, na), q(targets[1], s2, na))
    y = b["reward"] + 0.99 * b["discount"] * (nq - 0.001 * tf.reduce_sum(tf.square(na - a2), -1))
    cdf = tf.math.erf((edges[None] - y[:, None]) / (np.sqrt(2.0) * sigma))
    probs = (cdf[:, 1:] - cdf[:, :-1]) / (cdf[:, -1:] - cdf[:, :1] + 1e-6)
    with tf.GradientTape() as tape:
      loss = sum(tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(
          probs, _dense_stack(tf.concat([s, a], -1), c, True))) for c in critics)
    critic_opt.apply(tape.gradient(loss, critic_vars))
    actor_loss = tf.cond(step_count % 2 == 0, lambda: actor_update(s, a), lambda: tf.constant(0.0))
    step_count.assign_add(1)
    return loss + actor_loss
  return step


def _bare_iql_step(exp):
  """IQL (expectile V, AWR actor, 2 Q + targets, cosine actor lr, standardised observations) in one tf.function."""
  agent = exp.agent
  actor = _copies(agent.actor_network)
  qs = [_copies(c) for c in agent.critic_networks]
  targets = [_copies(c) for c in agent.target_critic_networks]
  value = _copies(agent.value_network)
  mean, std = agent.observation_normalizer.mean, agent.observation_normalizer.std
  q_vars = qs[0] + qs[1]
  q_opt, v_opt, actor_opt = _BareAdam(q_vars, 3e-4), _BareAdam(value, 3e-4), _BareAdam(actor, 3e-4)

  def mlp(variables, x):
    return _dense_stack(x, variables, False)

  @tf.function
  def step():
    b = exp.replay.sample()
    s, s2 = (b["observation"] - mean) / std, (b["next_observation"] - mean) / std
    a = b["action"]
    sa = tf.concat([s, a], -1)
    tq = tf.minimum(mlp(targets[0], sa)[:, 0], mlp(targets[1], sa)[:, 0])
    with tf.GradientTape() as tape:
      u = tq - mlp(value, s)[:, 0]
      v_loss = tf.reduce_mean(tf.where(u > 0, 0.7, 0.3) * tf.square(u))
    v_opt.apply(tape.gradient(v_loss, value))
    weights = tf.minimum(tf.exp(3.0 * (tq - mlp(value, s)[:, 0])), 100.0)
    with tf.GradientTape() as tape:
      kernel0, bias0, kernel1, bias1, mean_k, mean_b, std_k, std_b = actor
      h = tf.nn.relu(tf.matmul(tf.nn.relu(tf.matmul(s, kernel0) + bias0), kernel1) + bias1)
      mu = tf.tanh(tf.matmul(h, mean_k) + mean_b)
      log_std = tf.clip_by_value(tf.matmul(h, std_k) + std_b, -20.0, 2.0)
      log_prob = tf.reduce_sum(-0.5 * tf.square((a - mu) / tf.exp(log_std)) - log_std - 0.5 * np.log(2 * np.pi), -1)
      actor_loss = -tf.reduce_mean(weights * log_prob)
    grads = [tf.where(tf.math.is_nan(g), tf.zeros_like(g), g) for g in tape.gradient(actor_loss, actor)]
    actor_opt.lr = 3e-4 * 0.5 * (1.0 + tf.cos(np.pi * tf.minimum(actor_opt.t, 1e6) / 1e6))
    actor_opt.apply(grads)
    y = b["reward"] + 0.99 * b["discount"] * mlp(value, s2)[:, 0]
    with tf.GradientTape() as tape:
      q_loss = sum(tf.reduce_mean(tf.square(mlp(c, sa)[:, 0] - y)) for c in qs)
    q_opt.apply(tape.gradient(q_loss, q_vars))
    for c, t in zip(qs, targets):
      _polyak(c, t, 0.005)
    return v_loss + actor_loss + q_loss
  return step


def _side_by_side(ours, theirs, steps, rounds, label):
  ours(), theirs()  # trace both
  ours_rates, theirs_rates = [], []
  for r in range(rounds):
    ours_time = theirs_time = 0.0
    for _ in range(steps):
      ours_time += _timed(ours)
      theirs_time += _timed(theirs)
    ours_rates.append(steps / ours_time)
    theirs_rates.append(steps / theirs_time)
    print(f"   {label} round {r + 1}/{rounds}: {ours_rates[-1]:.2f} vs {theirs_rates[-1]:.2f} steps/s", flush=True)
  return ours_rates, theirs_rates


def run_study(quick: bool):
  import spread  # pylint: disable=g-import-not-at-top  (benchmarks/ is on the path under run.py)
  steps, rounds = (5, 2) if quick else (30, 5)
  entries = []
  for name, agent_name, batch, bare in (("rebrac", "rebrac", 1024, _bare_rebrac_step),
                                        ("iql", "iql", 256, _bare_iql_step)):
    exp = _study_experiment(agent_name, batch)
    ours, theirs = _side_by_side(exp.train_step, bare(exp), steps, rounds, name)
    entries.append(spread.entry(f"{name}_vs_bare_step", ours, theirs, "gradient steps/s",
                                goal=">= 0.91 (within 1.1x of the same math in one bare tf.function)",
                                batch_size=batch))
  base = _study_experiment("rebrac", 1024)
  chosen = ["LN", "DO", "GrN"] if quick else list(REGULARIZERS)
  for reg in chosen:
    settings = REGULARIZERS[reg]
    settings = settings if isinstance(settings, list) else [settings]
    exp = _study_experiment("rebrac", 1024, [f"ActorRegularization.{s}" for s in settings])
    # Cost = regularized step time / unregularized step time = unregularized rate / regularized rate.
    plain, regularized = _side_by_side(base.train_step, exp.train_step, steps, rounds, f"rebrac+{reg}")
    entries.append(spread.entry(f"rebrac_cost_{reg}", plain, regularized,
                                "steps/s unregularized (value) vs with the regularizer (baseline)",
                                goal="cost of the regularizer (1 = free)", higher_is_better=False))
  return entries


if __name__ == "__main__":
  for entry in run(quick=True):
    print(entry)
