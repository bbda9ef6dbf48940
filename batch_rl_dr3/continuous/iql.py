"""IQL (Kostrikov et al. 2022, "Offline RL with Implicit Q-Learning") as the actor-regularization study runs it
(DT6A/ActoReg algorithms/iql.py, a port of ikostrikov/implicit_q_learning; reference/actor-regularization.md §2).

Every gradient step (one `train_on_batch`, one shared batch), on standardised observations:
  1. value: u = min(Q1_tgt, Q2_tgt)(s, a) - V(s); L_V = mean |tau_e - 1(u < 0)| u^2; Adam 3e-4.
  2. actor: A = min(Q1_tgt, Q2_tgt)(s, a) - V_new(s); w = min(exp(beta A + sigma_bc xi), 100);
     L_pi = -mean w log pi(a | s [+ input noise]); gradients NaN -> 0, then gradient noise, then RegularizedAdam
     with the cosine learning-rate decay to 0 over the run (unless ActorRegularization.schedule names another).
  3. Q: y = r + gamma d V_new(s'); L_Q = mean (Q1 - y)^2 + (Q2 - y)^2 [+ c0 * mean_i DR3_i]; Adam 3e-4.
  4. targets: Polyak tau on both Q networks, every step.
DR3 pairs phi_i(s, a) with phi_i(s', a'_data) (IQL's backup is in-sample: V(s') is an expectile of Q(s', a') over
the dataset's actions, so a' is the dataset's next action).
Rewards: the study's only transformation is AntMaze r <- 100 r (`load_d4rl.reward_scale = 100`); no r - 1 and no
locomotion return-range scaling (those are CORL's/original IQL's, not ActoReg's; reference §2.4).
"""
import dataclasses
from typing import Optional

import gin
import tensorflow as tf

from batch_rl_dr3.continuous import actor_regularization
from batch_rl_dr3.continuous import losses
from batch_rl_dr3.continuous import networks
from batch_rl_dr3.continuous import offline_actor_critic
from batch_rl_dr3.errors import ConfigError


@gin.configurable(denylist=["time_step_spec", "action_spec", "transitions", "regularization", "seed",
                            "dr3_coefficient"])
class IqlAgent(offline_actor_critic.OfflineActorCritic):
  """IQL with a Gaussian tanh-mean actor carrying every actor regularizer.

  Defaults: ActoReg's IQL (lr 3e-4 for actor, Q and V; 256-256 networks; gamma 0.99; tau 0.005; clip 100;
  log-std in [-20, 2]; cosine actor schedule over 1M steps). expectile and temperature are per dataset
  (batch_rl_dr3/continuous/study.py); the defaults are IQL's locomotion values (0.7, 3.0). Observations are
  standardised with the training states' mean and std + 1e-3 (ActoReg: on in every config), inside the agent and
  its policy, so evaluation feeds raw observations.
  """

  METRICS = ("value_loss", "actor_loss", "critic_loss", "q_data", "v_data", "advantage", "weights", "dr3",
             "dot_product")

  def __init__(self, time_step_spec, action_spec, transitions=None, normalize_observations: bool = True,
               hidden_units=(256, 256), actor_learning_rate: float = 3e-4, critic_learning_rate: float = 3e-4,
               value_learning_rate: float = 3e-4, gamma: float = 0.99, tau: float = 0.005,
               expectile: float = 0.7, temperature: float = 3.0, max_weight: float = 100.0,
               actor_schedule: Optional[str] = "cosine", num_steps: int = 1_000_000,
               log_std_min: float = -20.0, log_std_max: float = 2.0,
               regularization: Optional[actor_regularization.ActorRegularization] = None,
               dr3_coefficient: float = 0.0, seed: int = 0):
    regularization = regularization or actor_regularization.ActorRegularization()
    observation_spec = time_step_spec.observation
    observation_normalizer = None
    if normalize_observations:
      if transitions is None:
        raise ConfigError("IqlAgent: normalize_observations needs the training transitions")
      observation_normalizer = offline_actor_critic.ObservationNormalizer.from_observations(
          transitions["observation"])
    actor = networks.GaussianActorNetwork(observation_spec, action_spec, hidden_units=hidden_units,
                                          regularization=regularization, log_std_min=log_std_min,
                                          log_std_max=log_std_max, seed=seed)
    actor.create_variables()
    super().__init__(time_step_spec, action_spec, actor, seed=seed, dr3_coefficient=dr3_coefficient,
                     observation_normalizer=observation_normalizer, name="IqlAgent")
    self.regularization = regularization
    self._critics, self._target_critics = [], []
    for i in range(2):
      critic = networks.MlpCriticNetwork((observation_spec, action_spec), hidden_units=hidden_units,
                                         layer_norm=False, init="iql", name=f"q_{i}")
      target = critic.copy(name=f"target_q_{i}")
      critic.create_variables()
      target.create_variables()
      offline_actor_critic.soft_update(critic.variables, target.variables, tau=1.0)
      self._critics.append(critic)
      self._target_critics.append(target)
    self._value = networks.MlpCriticNetwork(observation_spec, hidden_units=hidden_units, layer_norm=False,
                                            init="iql", with_action=False, name="value")
    self._value.create_variables()
    # The baseline's cosine decay is part of IQL; a schedule named in ActorRegularization replaces it.
    schedule = regularization.schedule or actor_schedule
    optimizer_reg = dataclasses.replace(
        regularization, schedule=schedule,
        schedule_steps=num_steps if regularization.schedule is None else regularization.schedule_steps)
    self.actor_optimizer = actor_regularization.RegularizedAdam(actor_learning_rate, actor.trainable_variables,
                                                                optimizer_reg, seed=seed)
    self._critic_variables = [v for c in self._critics for v in c.trainable_variables]
    self.critic_optimizer = actor_regularization.RegularizedAdam(critic_learning_rate, self._critic_variables,
                                                                 seed=seed + 1)
    self.value_optimizer = actor_regularization.RegularizedAdam(value_learning_rate,
                                                                self._value.trainable_variables, seed=seed + 2)
    self._gamma, self._tau = gamma, tau
    self._expectile, self._temperature, self._max_weight = expectile, temperature, max_weight

  @property
  def value_network(self):
    return self._value

  def critic_features(self, observation, action, training=False):
    """(Q [B], penultimate features [B, d]) of Q network 1 at (s, a)."""
    del training
    return self._critics[0].features_and_q((self.normalize(observation), tf.cast(action, tf.float32)))

  def _value_of(self, obs):
    return self._value.features_and_q(obs)[0]

  def actor_loss(self, obs, action, advantage, training=True):
    """-mean w log pi(a|s) with w = min(exp(beta A [+ BC noise]), max_weight); returns (loss, mean w)."""
    noise = None
    if training and self.regularization.bc_noise > 0:
      noise = self.regularization.bc_noise * self._normal(tf.shape(advantage))
    weights = losses.awr_weights(advantage, temperature=self._temperature, max_weight=self._max_weight,
                                 log_weight_noise=noise)
    distribution, _ = self._actor_network(obs, training=training)
    return losses.awr_actor_loss(weights, distribution.log_prob(action)), tf.reduce_mean(weights)

  def _train(self, batch):
    obs = self.normalize(batch["observation"])
    next_obs = self.normalize(batch["next_observation"])
    action = tf.cast(batch["action"], tf.float32)
    reward = tf.cast(batch["reward"], tf.float32)
    discount = tf.cast(batch["discount"], tf.float32)
    target_q = tf.minimum(*[c.features_and_q((obs, action))[0] for c in self._target_critics])

    value_vars = self._value.trainable_variables
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(value_vars)
      value_loss = losses.expectile_loss(target_q - self._value_of(obs), self._expectile)
    self.value_optimizer.apply_gradients(zip(tape.gradient(value_loss, value_vars), value_vars))

    value = self._value_of(obs)
    advantage = target_q - value
    actor_vars = self._actor_network.trainable_variables
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(actor_vars)
      actor_loss, mean_weight = self.actor_loss(obs, action, advantage, training=True)
    grads = [tf.where(tf.math.is_nan(g), tf.zeros_like(g), g) for g in tape.gradient(actor_loss, actor_vars)]
    self.actor_optimizer.apply_gradients(zip(grads, actor_vars))

    target = tf.stop_gradient(reward + self._gamma * discount * self._value_of(next_obs))
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(self._critic_variables)
      critic_loss, q_data, dr3, dots = 0.0, [], [], []
      next_action = tf.cast(batch["next_action"], tf.float32) if self._use_dr3 else None
      for critic in self._critics:
        q, penalty, dot = self._critic_outputs(critic, obs, action, next_obs, next_action, discount)
        dr3.append(penalty)
        dots.append(dot)
        critic_loss += tf.reduce_mean(tf.square(q - target))
        q_data.append(q)
      dr3_metrics, dr3_term = self._dr3_metrics(dr3, dots)
      total = critic_loss + dr3_term
    grads = tape.gradient(total, self._critic_variables)
    self.critic_optimizer.apply_gradients(zip(grads, self._critic_variables))
    for critic, target_net in zip(self._critics, self._target_critics):
      offline_actor_critic.soft_update(critic.variables, target_net.variables, self._tau)
    metrics = {"value_loss": value_loss, "actor_loss": actor_loss, "critic_loss": critic_loss,
               "q_data": tf.reduce_mean(q_data[0]), "v_data": tf.reduce_mean(value),
               "advantage": tf.reduce_mean(advantage), "weights": mean_weight, **dr3_metrics}
    return metrics
