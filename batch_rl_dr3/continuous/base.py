"""What SAC, CQL-SAC and BRAC share: DR3 on the critic, checkpointable randomness, public accessors.

DR3 (Kumar et al. 2022): c0 * dr3_penalty(phi(s, a), phi(s', a')) with phi the critic's last hidden layer, a'
the action the backup evaluates (a' ~ pi(s')), computed for each of the two critics on the *online* networks.
The penalty is added inside the critic loss, which tf-agents scales by `critic_loss_weight` (0.5) together
with the two TD losses: the objective is 0.5 * (TD1 + TD2) + c0 * (DR3_1 + DR3_2) / 2, i.e. c0 multiplies the
mean of the two critics' penalties. `c0` is a tf.Variable (changing it never retraces).

Random numbers: tf-agents samples with stateful ops seeded by Python ints, whose state is not checkpointed.
Here every draw (policy samples, CQL's uniform actions) uses stateless ops seeded from a checkpointed
`tf.random.Generator`, so a resumed run continues exactly as an uninterrupted one.
"""
from typing import Dict, Tuple

import tensorflow as tf
from tf_agents.networks import network
from tf_agents.utils import common
from tf_agents.utils import nest_utils

from batch_rl_dr3 import diagnostics
from batch_rl_dr3 import regularizers
from batch_rl_dr3.continuous import losses
from batch_rl_dr3.continuous import replay as replay_lib

# Per-step critic diagnostics written by the critic loss (variables, so a compiled step can return them).
CRITIC_METRICS = ("td_loss", "dr3", "dot_product", "feature_norm", "q_data", "target_q")


def termination_mask(discount):
  """[B] 1 where s' is bootstrapped, 0 where it is a placeholder after a terminal (the dataset discount is 0)."""
  return tf.cast(tf.not_equal(discount, 0.0), tf.float32)


class SeededDr3Mixin:
  """DR3 as a penalty object and the checkpointed seed generator every continuous agent has (`_init_penalty`
  and `_seed_rng` set by the agent).

  The DR3 term is `regularizers.DR3` (its form bound in gin on `DR3.*`: continuous/dr3.gin binds the paper's
  Eq. 7 with the placeholder s' after a terminal masked); its coefficient variable is the agent's c0.
  """

  def _init_penalty(self, dr3_coefficient: float):
    self._dr3 = regularizers.DR3(coefficient=dr3_coefficient)
    self._dr3_coefficient = self._dr3.coefficient

  @property
  def dr3(self) -> regularizers.DR3:
    """The DR3 penalty object (form, coefficient variable, label part)."""
    return self._dr3

  @property
  def dr3_coefficient(self) -> tf.Variable:
    return self._dr3_coefficient

  def _dr3_value(self, features, next_features, discount):
    """DR3 before c0 on one critic's phi(s, a), phi(s', a'), with the terminal mask from the batch's discount."""
    inputs = regularizers.PenaltyInputs(features=features, next_features=next_features,
                                        mask=termination_mask(discount), discount=discount)
    return self._dr3.value(inputs)

  @property
  def seed_generator(self) -> tf.random.Generator:
    return self._seed_rng

  def _next_seed(self):
    # TFP takes stateless seeds as int32 [2]; the generator makes int64 ones.
    return tf.cast(self._seed_rng.make_seeds(1)[:, 0], tf.int32)


class Dr3CriticMixin(SeededDr3Mixin):
  """DR3 critic loss + stateless sampling + public accessors, mixed into tf-agents' SacAgent / CqlSacAgent.

  tf-agents keeps the networks in private attributes (`_critic_network_1`, `_log_alpha`, ...): only this mixin
  reads them, and everything else (the experiment, diagnostics, tests) goes through the accessors below.
  `tests/test_continuous_tf_agents_contract.py` fails if tf-agents renames what is read or overridden here.
  """

  def _init_dr3(self, dr3_coefficient: float, seed: int, max_q_backup: bool, num_backup_samples: int):
    self._init_penalty(dr3_coefficient)
    self._seed_rng = tf.random.Generator.from_seed(seed)
    self._max_q_backup = max_q_backup
    self._num_backup_samples = num_backup_samples
    self.critic_metrics = {name: tf.Variable(0.0, trainable=False, name=f"metric_{name}")
                           for name in CRITIC_METRICS}

  @property
  def critic_networks(self) -> Tuple[network.Network, network.Network]:
    """The two online critics (FeatureCriticNetwork)."""
    return self._critic_network_1, self._critic_network_2

  @property
  def target_critic_networks(self) -> Tuple[network.Network, network.Network]:
    return self._target_critic_network_1, self._target_critic_network_2

  @property
  def actor_network(self) -> network.Network:
    return self._actor_network

  @property
  def actor_optimizer(self):
    """The actor's optimizer (Keras Adam, or RegularizedAdam when an optimizer-side actor regularizer is on)."""
    return self._actor_optimizer

  @property
  def actor_optimizer(self):
    """The actor's optimizer (tf-agents' `_actor_optimizer`), e.g. for the plasticity probe."""
    return self._actor_optimizer

  def critic_features(self, observation, action, training=False):
    """(q [B], penultimate features [B, d]) of critic 1 at (s, a)."""
    return self._critic_network_1.features_and_q((observation, tf.cast(action, tf.float32)), training=training)

  def actor_features(self, observations, training=False):
    """ActorFeatures of the actor (actions = tanh of the Gaussian's mean, hidden pre-activations, penultimate)."""
    return self._actor_network.actor_features(observations, training=training)

  def train_on_batch(self, batch: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """One tf-agents `train` step on a transition dict; returns its losses and the agent's metrics."""
    loss_info = self.train(replay_lib.to_tf_agents_transition(batch))
    metrics = {"loss": loss_info.loss}
    for name, value in loss_info.extra._asdict().items():
      metrics[name] = tf.cast(value, tf.float32)
    if "cql_loss" in metrics:
      metrics["cql_gap"] = metrics.pop("cql_loss")
    metrics.update(self.metrics())
    return metrics

  def entropy_weight(self) -> tf.Tensor:
    """The weight of -log pi(a'|s') in the target and of log pi in the actor loss (SAC's trained temperature)."""
    return tf.exp(self._log_alpha)

  def _action_distribution(self, time_steps, training=False):
    batch_size = nest_utils.get_outer_shape(time_steps, self._time_step_spec)[0]
    policy = self._train_policy if training else self._policy
    return policy.distribution(time_steps, policy_state=policy.get_initial_state(batch_size)).action

  def _actions_and_log_probs(self, time_steps, training=False):
    distribution = self._action_distribution(time_steps, training)
    actions = tf.nest.map_structure(lambda d: d.sample(seed=self._next_seed()), distribution)
    return actions, common.log_probability(distribution, actions, self.action_spec)

  def _sample_and_transpose_actions_and_log_probs(self, time_steps, num_action_samples, training=False):
    """[B, N, ...] actions and [B, N] log-probs, N samples per state."""
    distribution = self._action_distribution(time_steps, training)
    actions = tf.nest.map_structure(lambda d: d.sample(num_action_samples, seed=self._next_seed()),
                                    distribution)
    log_pi = common.log_probability(distribution, actions, self.action_spec)
    swap = lambda t: tf.transpose(t, [1, 0] + list(range(2, t.shape.rank)))
    return swap(actions), swap(log_pi)

  def _tiled_q(self, network, observation, actions_bn, step_type):
    """Q of N actions per state: observation [B, ...], actions [B, N, d] -> [B, N]."""
    batch, num = tf.shape(actions_bn)[0], tf.shape(actions_bn)[1]
    tiled_obs = tf.nest.map_structure(lambda o: tf.repeat(o, num, axis=0), observation)
    flat_actions = tf.reshape(actions_bn, [batch * num, -1])
    q, _ = network((tiled_obs, flat_actions), tf.repeat(step_type, num, axis=0), training=False)
    return tf.reshape(q, [batch, num])

  def _backup_value(self, next_time_steps, include_entropy: bool):
    """V(s') used by the target, and the action a' ~ pi(s') it evaluates (the one DR3 pairs with s')."""
    next_actions, next_log_pis = self._actions_and_log_probs(next_time_steps, training=False)
    if self._max_q_backup:
      # CQL's max-Q backup: max over N policy samples of each target critic, then the min of the two.
      sampled, _ = self._sample_and_transpose_actions_and_log_probs(
          next_time_steps, self._num_backup_samples, training=False)
      q1 = self._tiled_q(self._target_critic_network_1, next_time_steps.observation, sampled,
                         next_time_steps.step_type)
      q2 = self._tiled_q(self._target_critic_network_2, next_time_steps.observation, sampled,
                         next_time_steps.step_type)
      value = tf.minimum(tf.reduce_max(q1, axis=1), tf.reduce_max(q2, axis=1))
    else:
      target_input = (next_time_steps.observation, next_actions)
      q1, _ = self._target_critic_network_1(target_input, next_time_steps.step_type, training=False)
      q2, _ = self._target_critic_network_2(target_input, next_time_steps.step_type, training=False)
      value = tf.minimum(q1, q2)
    if include_entropy:
      value -= self.entropy_weight() * next_log_pis
    return value, next_actions

  def _dr3_critic_loss(self, time_steps, actions, next_time_steps, td_errors_loss_fn, gamma,
                       reward_scale_factor, weights, training, include_entropy, value_penalty=None):
    """TD loss of both critics (tf-agents' form) + c0 * (DR3_1 + DR3_2); records CRITIC_METRICS."""
    with tf.name_scope("critic_loss"):
      next_value, next_actions = self._backup_value(next_time_steps, include_entropy)
      if value_penalty is not None:
        next_value -= value_penalty
      td_targets = losses.bellman_target(next_time_steps.reward, next_time_steps.discount, next_value,
                                         gamma=gamma, reward_scale=reward_scale_factor)
      # (s, a) and (s', a') go through each critic as one batch: half the kernel launches of two passes.
      batch_size = tf.shape(actions)[0]
      joint_input = (tf.nest.map_structure(lambda x, y: tf.concat([x, y], 0), time_steps.observation,
                                           next_time_steps.observation),
                     tf.concat([tf.cast(actions, tf.float32), tf.cast(next_actions, tf.float32)], 0))
      joint_q1, joint_phi1 = self._critic_network_1.features_and_q(joint_input, training=training)
      joint_q2, joint_phi2 = self._critic_network_2.features_and_q(joint_input, training=training)
      q1, q2 = joint_q1[:batch_size], joint_q2[:batch_size]
      phi1, next_phi1 = joint_phi1[:batch_size], joint_phi1[batch_size:]
      phi2, next_phi2 = joint_phi2[:batch_size], joint_phi2[batch_size:]
      td_loss = td_errors_loss_fn(td_targets, q1) + td_errors_loss_fn(td_targets, q2)
      aggregated = common.aggregate_losses(
          per_example_loss=td_loss, sample_weight=weights,
          regularization_loss=self._critic_network_1.losses + self._critic_network_2.losses)
      dr3 = (self._dr3_value(phi1, next_phi1, next_time_steps.discount)
             + self._dr3_value(phi2, next_phi2, next_time_steps.discount))
      values = {
          "td_loss": aggregated.total_loss,
          "dr3": dr3 / 2.0,
          "dot_product": tf.reduce_mean(regularizers.feature_dot_products(phi1, next_phi1)),
          "feature_norm": diagnostics.mean_feature_norm(phi1),
          "q_data": tf.reduce_mean(q1),
          "target_q": tf.reduce_mean(td_targets),
      }
      for name, value in values.items():
        self.critic_metrics[name].assign(tf.cast(value, tf.float32))
      return aggregated.total_loss + self._dr3_coefficient * dr3

  def metrics(self) -> Dict[str, tf.Tensor]:
    """The critic diagnostics of the last critic loss, and the entropy weight as `alpha`."""
    out = {name: var.read_value() for name, var in self.critic_metrics.items()}
    out["alpha"] = self.entropy_weight()
    return out
