"""Shared pieces of the continuous-agent tests: tiny specs, batches, networks and agents built on them."""
import numpy as np
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from batch_rl_dr3.continuous import networks

OBS_DIM, ACT_DIM, BATCH = 5, 2, 8


def specs():
  observation_spec = tf.TensorSpec([OBS_DIM], tf.float32)
  action_spec = tensor_spec.BoundedTensorSpec([ACT_DIM], tf.float32, -1.0, 1.0)
  return ts.time_step_spec(observation_spec), action_spec


def batch(seed=0, terminal_at=None):
  rng = np.random.default_rng(seed)
  discount = np.ones(BATCH, np.float32)
  if terminal_at is not None:
    discount[terminal_at] = 0.0
  return {"observation": rng.normal(size=(BATCH, OBS_DIM)).astype(np.float32),
          "action": rng.uniform(-0.9, 0.9, (BATCH, ACT_DIM)).astype(np.float32),
          "reward": rng.normal(size=BATCH).astype(np.float32),
          "next_observation": rng.normal(size=(BATCH, OBS_DIM)).astype(np.float32),
          "discount": discount}


def set_policy(actor, mean_bias=None, log_std_bias=-100.0):
  """Make pi(.|s) input-independent: pre-tanh Normal(mean_bias, exp(clip(log_std_bias, -20, 2)))."""
  layer = actor._projection._projection_layer  # tf-agents' projection: no public accessor
  kernel, bias = layer.get_weights()
  mean_bias = np.zeros(ACT_DIM) if mean_bias is None else np.asarray(mean_bias)
  layer.set_weights([np.zeros_like(kernel), np.concatenate([mean_bias, np.full(ACT_DIM, log_std_bias)])])


def make_networks(seed=0, **actor_kwargs):
  time_step_spec, action_spec = specs()
  tf.random.set_seed(seed)
  critic = networks.FeatureCriticNetwork((time_step_spec.observation, action_spec), hidden_units=(16, 16))
  actor = networks.RegularizedActorNetwork(time_step_spec.observation, action_spec, hidden_units=(16,), **actor_kwargs)
  critic.create_variables()
  actor.create_variables()
  return critic, actor


def make_agent(cls, critic, actor, **kwargs):
  """An agent on these networks. The entropy temperature starts at e^-30: with the near-deterministic policies of
  these tests log pi(a|s) ~ 20 d + O(1) noise, which would otherwise make targets and actor losses random."""
  time_step_spec, action_spec = specs()
  kwargs.setdefault("initial_log_alpha", -30.0)
  kwargs.setdefault("use_log_alpha_in_alpha_loss", False)
  critic_2 = critic.copy(name="critic_2")
  critic_2.create_variables()
  agent = cls(time_step_spec=time_step_spec, action_spec=action_spec, critic_network=critic,
              critic_network_2=critic_2, actor_network=actor,
              actor_optimizer=tf.keras.optimizers.SGD(0.1), critic_optimizer=tf.keras.optimizers.SGD(0.1),
              alpha_optimizer=tf.keras.optimizers.SGD(0.1), gamma=0.9, target_update_tau=0.5, **kwargs)
  agent.initialize()
  return agent


def numpy_features(critic, observation, action):
  """phi(s, a) by an independent numpy forward pass through the critic's weights."""
  x = np.concatenate([observation, action], axis=-1)
  for layer in critic._hidden:
    kernel, bias = layer.get_weights()
    x = np.maximum(x @ kernel + bias, 0.0)
  return x
