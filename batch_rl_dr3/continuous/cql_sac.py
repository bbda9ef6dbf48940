"""`Dr3CqlSacAgent`: tf-agents `CqlSacAgent` (Lagrange alpha, importance-sampled logsumexp) with DR3 on the
critic, a max-Q backup option and checkpointable sampling.

Overrides tf-agents' private `_critic_loss_with_optional_entropy_term` (DR3 + max-Q backup) and `_cql_loss`
(stateless uniform draws); tests/test_continuous_tf_agents_contract.py fails if tf-agents renames either.
"""
import gin
import tensorflow as tf
from tf_agents.agents.cql import cql_sac_agent

from batch_rl_dr3.continuous import base
from batch_rl_dr3.continuous import losses


@gin.configurable
class Dr3CqlSacAgent(base.Dr3CriticMixin, cql_sac_agent.CqlSacAgent):
  """tf-agents CqlSacAgent with DR3 on the critic, a max-Q backup option and checkpointable sampling."""

  def __init__(self, *args, cql_alpha: float = 5.0, num_cql_samples: int = 10,
               include_critic_entropy_term: bool = False, use_lagrange_cql_alpha: bool = False,
               dr3_coefficient: float = 0.0, seed: int = 0, max_q_backup: bool = False,
               num_backup_samples: int = 10, **kwargs):
    # CQL defaults: alpha 5 without Lagrange (CQL's MuJoCo / kitchen setting), 10 samples per distribution.
    super().__init__(*args, cql_alpha=cql_alpha, num_cql_samples=num_cql_samples,
                     include_critic_entropy_term=include_critic_entropy_term,
                     use_lagrange_cql_alpha=use_lagrange_cql_alpha, **kwargs)
    self._init_dr3(dr3_coefficient, seed, max_q_backup, num_backup_samples)

  def _critic_loss_with_optional_entropy_term(self, time_steps, actions, next_time_steps, td_errors_loss_fn,
                                              gamma=1.0, reward_scale_factor=1.0, weights=None,
                                              training=False):
    include_entropy = self._include_critic_entropy_term and not self._max_q_backup
    return self._dr3_critic_loss(time_steps, actions, next_time_steps, td_errors_loss_fn, gamma,
                                 reward_scale_factor, weights, training, include_entropy=include_entropy)

  def _cql_loss(self, time_steps, actions, training=False):
    """CQL(H): mean over both critics of logsumexp_a Q(s, a) - Q(s, a_data), tf-agents' estimator."""
    num = self._num_cql_samples
    sampled, sampled_log_pi = self._sample_and_transpose_actions_and_log_probs(time_steps, num, training=False)
    spec = tf.nest.flatten(self.action_spec)[0]
    low = tf.cast(spec.minimum, tf.float32) * tf.ones(spec.shape, tf.float32)
    high = tf.cast(spec.maximum, tf.float32) * tf.ones(spec.shape, tf.float32)
    uniform = low + (high - low) * tf.random.stateless_uniform(tf.shape(sampled), seed=self._next_seed())
    log_uniform_density = -tf.reduce_sum(tf.math.log(high - low))
    q_data1, _ = self._critic_network_1((time_steps.observation, actions), time_steps.step_type,
                                        training=training)
    q_data2, _ = self._critic_network_2((time_steps.observation, actions), time_steps.step_type,
                                        training=training)
    gaps = []
    for network, q_data in ((self._critic_network_1, q_data1), (self._critic_network_2, q_data2)):
      # Policy and uniform samples in one pass: [B, 2N].
      q_both = self._tiled_q(network, time_steps.observation, tf.concat([sampled, uniform], axis=1),
                             time_steps.step_type)
      q_policy, q_uniform = q_both[:, :num], q_both[:, num:]
      logsumexp = losses.importance_sampled_logsumexp(q_policy, sampled_log_pi, q_uniform,
                                                      log_uniform_density, self._softmax_temperature)
      gaps.append(losses.cql_gap(logsumexp, q_data))
    return (gaps[0] + gaps[1]) / 2.0
