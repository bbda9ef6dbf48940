"""`BracAgent`: BRAC (Wu et al. 2019, "Behavior Regularized Offline RL"; google-research
`behavior_regularized_offline_rl/brac/brac_primal_agent.py`) on tf-agents `SacAgent`'s networks, targets and
optimizers: a behaviour policy fit by maximum likelihood on the data, a sampled KL(pi || pi_b) penalty in the value target (BRAC-v, `value_penalty=True`) and in the policy objective (always;
BRAC-p when `value_penalty=False`), min over two critics, warm start, DR3 on the critic (see `base`).

The behaviour policy as BRAC trains it: BRAC's pipeline first fits pi_b alone by behaviour cloning (its run_bc.sh:
`--agent_name=bc --total_train_steps=300000`, Adam 5e-4, batch 256, a (200, 200) network), saves it, and the
BRAC agent loads that checkpoint (`brac_primal_agent.Agent.behavior_ckpt_file`, run_primal.sh) and never trains
it again. Here: `behavior_pretrain_steps` steps of `train_behavior` (the experiment runs them on the data before
the first agent step; `behavior_steps` is checkpointed, so a resumed run does not repeat them), then pi_b is
frozen; the agent's `_train` refuses to run before they are done. `behavior_pretrain_steps=0` co-trains pi_b
with the agent instead (one max-likelihood step per agent step), our former behaviour.

Overrides tf-agents' `_train` (TFAgent's training hook; tests/test_continuous_tf_agents_contract.py checks it).
"""
from typing import Any, Dict, Optional

import gin
import tensorflow as tf
from tf_agents.agents import tf_agent
from tf_agents.agents.sac import sac_agent

from batch_rl_dr3 import labels
from batch_rl_dr3.continuous import base
from batch_rl_dr3.continuous import losses


@gin.configurable
class BracAgent(base.Dr3CriticMixin, sac_agent.SacAgent):
  """BRAC-v / BRAC-p with a learned behaviour policy, on tf-agents' SAC networks and target updates.

  Args (beyond SacAgent's):
    behavior_network: an actor network of the same kind as the policy, fit by max-likelihood to the data.
    behavior_optimizer: its optimizer.
    divergence_coefficient: alpha of the KL penalty (BRAC's `alpha`; 0.1 in its run_primal.sh).
    value_penalty: True = BRAC-v (penalty in the target and the policy loss), False = BRAC-p (policy only).
    num_divergence_samples: actions sampled from pi per state for the KL estimate (BRAC: 4).
    warm_start_steps: the policy ignores Q (only matches pi_b) for this many steps (BRAC: 20,000).
    entropy_coefficient: fixed entropy weight in the target and the policy loss (BRAC default 0: no entropy);
      None trains SAC's temperature instead.
    behavior_action_clip: actions are clipped this far inside the bounds before log pi_b (atanh blows up at +-1).
    behavior_pretrain_steps: max-likelihood steps of pi_b before the agent trains, then pi_b is frozen (BRAC's
      run_bc.sh: 300,000); 0 co-trains pi_b alongside the agent.
    behavior_learning_rate: Adam learning rate of pi_b when no behavior_optimizer is given (run_bc.sh: 5e-4).
  """

  def __init__(self, *args, behavior_network=None, behavior_optimizer=None, divergence_coefficient: float = 0.1,
               value_penalty: bool = True, num_divergence_samples: int = 4, warm_start_steps: int = 20_000,
               entropy_coefficient: Optional[float] = 0.0, behavior_action_clip: float = 1e-3,
               behavior_pretrain_steps: int = 300_000, behavior_learning_rate: float = 5e-4,
               dr3_coefficient: float = 0.0, seed: int = 0, **kwargs):
    super().__init__(*args, **kwargs)
    self._init_dr3(dr3_coefficient, seed, max_q_backup=False, num_backup_samples=1)
    if behavior_network is None:
      behavior_network = self._actor_network.copy(name="BehaviorNetwork")
    behavior_network.create_variables(self.time_step_spec.observation)
    self._behavior_network = behavior_network
    self._behavior_optimizer = behavior_optimizer or tf.keras.optimizers.Adam(behavior_learning_rate)
    if behavior_pretrain_steps < 0:
      raise ValueError(f"BracAgent.behavior_pretrain_steps={behavior_pretrain_steps}; expected >= 0 (0 = co-train)")
    self._behavior_pretrain_steps = int(behavior_pretrain_steps)
    self._behavior_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="behavior_steps")
    self._divergence_coefficient = tf.Variable(float(divergence_coefficient), trainable=False,
                                               name="divergence_coefficient")
    self._value_penalty = value_penalty
    self._num_divergence_samples = num_divergence_samples
    self._warm_start_steps = warm_start_steps
    self._entropy_coefficient = entropy_coefficient
    self._behavior_action_clip = behavior_action_clip
    self.brac_metrics = {name: tf.Variable(0.0, trainable=False, name=f"metric_{name}")
                         for name in ("behavior_loss", "divergence")}

  def metrics(self):
    out = super().metrics()
    out.update({name: var.read_value() for name, var in self.brac_metrics.items()})
    return out

  @property
  def behavior_network(self):
    return self._behavior_network

  @property
  def behavior_pretrain_steps(self) -> int:
    return self._behavior_pretrain_steps

  @property
  def behavior_steps(self) -> tf.Variable:
    """Max-likelihood steps pi_b has taken (checkpointed with the agent)."""
    return self._behavior_steps

  def label_settings(self) -> Dict[str, Any]:
    """Settings of the run's label (batch_rl_dr3.labels): the behaviour policy's training when it is not BRAC's
    (pre-trained for 300,000 steps), so co-trained or shorter-pre-trained runs are never pooled with BRAC's."""
    default = labels.constructor_defaults(BracAgent)["behavior_pretrain_steps"]
    return labels.differing({"behavior_pretrain_steps": self._behavior_pretrain_steps},
                            {"behavior_pretrain_steps": default})

  def behavior_pretrain_steps_remaining(self) -> int:
    """Pre-training steps still to run before the agent may train (0 when co-training)."""
    return max(0, self._behavior_pretrain_steps - int(self._behavior_steps.numpy()))

  def _behavior_update(self, time_steps, actions):
    behavior_vars = self._behavior_network.trainable_variables
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(behavior_vars)
      loss = self.behavior_loss(time_steps, actions)
    self._apply_gradients(tape.gradient(loss, behavior_vars), behavior_vars, self._behavior_optimizer)
    self._behavior_steps.assign_add(1)
    self.brac_metrics["behavior_loss"].assign(loss)
    return loss

  def train_behavior(self, experience):
    """One max-likelihood step of pi_b alone on a batch of transitions (BRAC's separate BC run); its loss."""
    time_steps, policy_steps, _ = self._as_transition(experience)
    return self._behavior_update(time_steps, policy_steps.action)

  def entropy_weight(self):
    if self._entropy_coefficient is None:
      return tf.exp(self._log_alpha)
    return tf.constant(self._entropy_coefficient, tf.float32)

  def _behavior_log_prob(self, observation, actions):
    """log pi_b(a|s); actions [B, d] or [N, B, d] (N samples per state, one network pass)."""
    spec = tf.nest.flatten(self.action_spec)[0]
    clipped = tf.clip_by_value(actions, spec.minimum + self._behavior_action_clip,
                               spec.maximum - self._behavior_action_clip)
    distribution, _ = self._behavior_network(observation, training=False)
    return distribution.log_prob(clipped)  # the [B] batch broadcasts against a leading sample axis

  def divergence(self, time_steps):
    """Sampled KL(pi || pi_b) at each state of the batch: [B]."""
    distribution = self._action_distribution(time_steps, training=False)
    samples = distribution.sample(self._num_divergence_samples, seed=self._next_seed())  # [N, B, d]
    log_pi = distribution.log_prob(samples)
    log_b = self._behavior_log_prob(time_steps.observation, samples)
    return losses.sampled_kl(log_pi, log_b)

  def critic_loss(self, time_steps, actions, next_time_steps, td_errors_loss_fn, gamma=1.0,
                  reward_scale_factor=1.0, weights=None, training=False):
    penalty = None
    if self._value_penalty:
      penalty = self._divergence_coefficient * tf.stop_gradient(self.divergence(next_time_steps))
    # The target's entropy term uses the fixed BRAC weight (none at BRAC's default 0) or SAC's trained alpha.
    include_entropy = self._entropy_coefficient is None or self._entropy_coefficient > 0
    return self._dr3_critic_loss(time_steps, actions, next_time_steps, td_errors_loss_fn, gamma,
                                 reward_scale_factor, weights, training, include_entropy=include_entropy,
                                 value_penalty=penalty)

  def brac_actor_loss(self, time_steps, weights=None):
    actions, log_pi = self._actions_and_log_probs(time_steps, training=True)
    q1, _ = self._critic_network_1((time_steps.observation, actions), time_steps.step_type, training=False)
    q2, _ = self._critic_network_2((time_steps.observation, actions), time_steps.step_type, training=False)
    q_weight = tf.cast(self.train_step_counter >= self._warm_start_steps, tf.float32)
    divergence = self.divergence(time_steps)
    self.brac_metrics["divergence"].assign(tf.reduce_mean(divergence))
    loss = losses.brac_actor_loss(tf.minimum(q1, q2), log_pi, divergence,
                                  divergence_coefficient=self._divergence_coefficient,
                                  entropy_coefficient=self.entropy_weight(), q_weight=q_weight)
    return loss + tf.add_n([tf.constant(0.0)] + list(self._actor_network.losses))

  def behavior_loss(self, time_steps, actions):
    """Negative log-likelihood of the data actions under pi_b (plus its regularization losses)."""
    nll = -tf.reduce_mean(self._behavior_log_prob(time_steps.observation, actions))
    return nll + tf.add_n([tf.constant(0.0)] + list(self._behavior_network.losses))

  def _train(self, experience, weights):
    time_steps, policy_steps, next_time_steps = self._as_transition(experience)
    actions = policy_steps.action
    if self._behavior_pretrain_steps:
      tf.debugging.assert_greater_equal(
          self._behavior_steps, tf.constant(self._behavior_pretrain_steps, tf.int64),
          message="BracAgent: the behaviour policy is not pre-trained yet; run train_behavior for "
                  "BracAgent.behavior_pretrain_steps steps first (ContinuousExperiment does)")

    critic_vars = self._critic_network_1.trainable_variables + self._critic_network_2.trainable_variables
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(critic_vars)
      critic_loss = self._critic_loss_weight * self.critic_loss(
          time_steps, actions, next_time_steps, td_errors_loss_fn=self._td_errors_loss_fn, gamma=self._gamma,
          reward_scale_factor=self._reward_scale_factor, weights=weights, training=True)
    self._apply_gradients(tape.gradient(critic_loss, critic_vars), critic_vars, self._critic_optimizer)

    actor_vars = self._actor_network.trainable_variables
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(actor_vars)
      actor_loss = self._actor_loss_weight * self.brac_actor_loss(time_steps, weights)
    self._apply_gradients(tape.gradient(actor_loss, actor_vars), actor_vars, self._actor_optimizer)

    alpha_loss = tf.constant(0.0)
    if self._entropy_coefficient is None:
      with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch([self._log_alpha])
        alpha_loss = self._alpha_loss_weight * self.alpha_loss(time_steps, weights=weights)
      self._apply_gradients(tape.gradient(alpha_loss, [self._log_alpha]), [self._log_alpha],
                            self._alpha_optimizer)

    if self._behavior_pretrain_steps:
      behavior_loss = tf.constant(0.0)  # pi_b is frozen after its pre-training (BRAC loads it from a checkpoint)
    else:
      behavior_loss = self._behavior_update(time_steps, actions)

    self.train_step_counter.assign_add(1)
    self._update_target()
    extra = sac_agent.SacLossInfo(critic_loss=critic_loss, actor_loss=actor_loss, alpha_loss=alpha_loss)
    return tf_agent.LossInfo(loss=critic_loss + actor_loss + alpha_loss + behavior_loss, extra=extra)
