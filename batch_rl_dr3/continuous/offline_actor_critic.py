"""What ReBRAC and IQL share: a tf.Module agent (not a tf-agents TFAgent: one fused train step on a transition
dict, nothing tf-agents' `train` would add), a tf-agents `ActorPolicy` for evaluation, Polyak targets through
tf-agents' `common.soft_variables_update`, checkpointed randomness, metrics held in variables, and the public
accessors every continuous agent offers (`train_on_batch`, `policy`, `actor_network`, `critic_networks`,
`critic_features`, `actor_features`, `metrics`, `dr3_coefficient`).
"""
from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf
from tf_agents.policies import actor_policy
from tf_agents.utils import common

from batch_rl_dr3 import regularizers
from batch_rl_dr3.continuous import actor_regularization
from batch_rl_dr3.continuous import base
from batch_rl_dr3.errors import DataError


class ObservationNormalizer(tf.Module):
  """(s - mean) / std with fixed statistics of the training states (std + 1e-3, as ActoReg's compute_mean_std).
  `normalize` is what tf-agents' ActorPolicy calls on every observation it is given."""

  def __init__(self, mean, std, name: str = "ObservationNormalizer"):
    super().__init__(name=name)
    self.mean = tf.Variable(np.asarray(mean, np.float32), trainable=False, name="mean")
    self.std = tf.Variable(np.asarray(std, np.float32), trainable=False, name="std")

  @classmethod
  def from_observations(cls, observations, epsilon: float = 1e-3):
    observations = np.asarray(observations, np.float64)
    return cls(observations.mean(0), observations.std(0) + epsilon)

  def normalize(self, observation):
    return (tf.cast(observation, tf.float32) - self.mean) / self.std


def soft_update(source_variables: Sequence[tf.Variable], target_variables: Sequence[tf.Variable], tau: float):
  """target <- tau * source + (1 - tau) * target (tf-agents' common.soft_variables_update)."""
  return common.soft_variables_update(list(source_variables), list(target_variables), tau=tau)


def require_next_action(batch_keys, agent: str):
  if "next_action" not in batch_keys:
    raise DataError(f"{agent} needs the dataset's next actions (`next_action`) in the transitions; the loaders "
                    f"of batch_rl_dr3.data produce them, a custom load_dataset must too")


class OfflineActorCritic(base.SeededDr3Mixin, tf.Module):
  """Base of ReBRAC and IQL. Subclasses set the networks and implement `_train(batch) -> metrics`."""

  METRICS: Sequence[str] = ()

  def __init__(self, time_step_spec, action_spec, actor_network, seed: int, dr3_coefficient: float,
               observation_normalizer: Optional[ObservationNormalizer] = None, name: str = "OfflineActorCritic"):
    super().__init__(name=name)
    self.time_step_spec, self.action_spec = time_step_spec, action_spec
    self._actor_network = actor_network
    self._normalizer = observation_normalizer
    self._seed_rng = tf.random.Generator.from_seed(seed)
    self._init_penalty(dr3_coefficient)
    self._use_dr3 = dr3_coefficient != 0.0
    self.train_step_counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="train_step_counter")
    self._metric_vars = {name: tf.Variable(0.0, trainable=False, name=f"metric_{name}") for name in self.METRICS}
    self.policy = actor_policy.ActorPolicy(time_step_spec, action_spec, actor_network, training=False,
                                           observation_normalizer=observation_normalizer, clip=True)

  # ------------------------------------------------------------------ public accessors
  @property
  def actor_network(self):
    return self._actor_network

  @property
  def critic_networks(self):
    return tuple(self._critics)

  @property
  def target_critic_networks(self):
    return tuple(self._target_critics)

  @property
  def observation_normalizer(self) -> Optional[ObservationNormalizer]:
    return self._normalizer

  def normalize(self, observation):
    """What the networks see: the observation itself, or its standardised form (IQL)."""
    observation = tf.cast(observation, tf.float32)
    return observation if self._normalizer is None else self._normalizer.normalize(observation)

  def actor_features(self, observations, training: bool = False) -> actor_regularization.ActorFeatures:
    """The actor's deterministic actions, hidden pre-activations (the last = the study's trunk) and penultimate
    features on raw `observations` (normalised first where the agent normalises)."""
    return self._actor_network.actor_features(self.normalize(observations), training=training)

  def metrics(self) -> Dict[str, tf.Tensor]:
    return {name: var.read_value() for name, var in self._metric_vars.items()}

  def train_on_batch(self, batch: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """One gradient step on a transition dict (observation, action, reward, next_observation, discount,
    next_action); returns the step's metrics."""
    values = self._train(batch)
    self.train_step_counter.assign_add(1)
    for name, value in values.items():
      self._metric_vars[name].assign(tf.cast(value, tf.float32))
    return self.metrics()

  def _train(self, batch):
    raise NotImplementedError

  # ------------------------------------------------------------------ helpers for subclasses
  def _critic_outputs(self, critic, obs, action, next_obs, next_action, discount):
    """critic(s, a) outputs, and with DR3 on, (penalty, mean dot product) of phi(s, a) . phi(s', a') computed in
    the same pass (the two batches concatenated; `discount` 0 marks the placeholder s' after a terminal);
    (outputs, None, None) otherwise."""
    if not self._use_dr3:
      return critic.features_and_q((obs, action), training=True)[0], None, None
    batch = tf.shape(obs)[0]
    out, phi = critic.features_and_q((tf.concat([obs, next_obs], 0), tf.concat([action, next_action], 0)),
                                     training=True)
    phi, next_phi = phi[:batch], phi[batch:]
    return (out[:batch], self._dr3_value(phi, next_phi, discount),
            tf.reduce_mean(regularizers.feature_dot_products(phi, next_phi)))

  def _dr3_metrics(self, penalties, dots):
    """c0-free DR3 metrics (mean over critics), and the term added to the critic loss."""
    if not self._use_dr3:
      return {}, 0.0
    mean = tf.add_n(penalties) / len(penalties)
    return {"dr3": mean, "dot_product": dots[0]}, self._dr3_coefficient * mean

  def _normal(self, shape):
    return tf.random.stateless_normal(shape, self._next_seed())
