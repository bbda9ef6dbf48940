"""ReBRAC (Tarasov et al. 2023, "Revisiting the Minimalist Approach to Offline RL") as the actor-regularization
study runs it (DT6A/ActoReg algorithms/rebrac.py and rebrac_cl.py; reference/actor-regularization.md §1).

Every gradient step (one `train_on_batch`):
  critic: a~' = clip(pi_target(s') + clip(N(0, 0.2^2), -0.5, 0.5), -1, 1); p' = ||a~' - a'_data||^2;
          y = r + gamma d (min_i Q_target,i(s', a~') - beta_c p'); loss = sum_i mean_B l(Q_i(s, a), y) where
          l = squared error (`critic_head='mse'`, rebrac.py) or the HL-Gauss cross-entropy over value bins
          (`critic_head='hl_gauss'`, rebrac_cl.py: the study's configs) [+ c0 * mean_i DR3_i when c0 != 0].
  actor (every `policy_freq` steps, on step indices 0, 2, 4, ..., after the critic step, with the new critic):
          a_pi = pi(s) in training mode (dropout, input noise); loss = mean(beta_a ||a_pi - a + sigma_bc xi||^2
          - lambda min_i Q_i(s, a_pi)), lambda = 1 / mean|Q| (constant); RegularizedAdam (weight decay, gradient
          noise, schedule); then the Polyak targets (tau 0.005): the actor target from the actor parameters of
          *before* this actor step (ActoReg's one-update lag), the critic targets from the updated critics.
DR3 pairs phi_i(s, a) with phi_i(s', a~') on the online critics (a~' is the action the backup evaluates).
"""
from typing import Optional, Tuple

import gin
import numpy as np
import tensorflow as tf

from batch_rl_dr3.continuous import actor_regularization
from batch_rl_dr3.continuous import losses
from batch_rl_dr3.continuous import networks
from batch_rl_dr3.continuous import offline_actor_critic
from batch_rl_dr3.errors import ConfigError

CRITIC_HEADS = ("mse", "hl_gauss")


def monte_carlo_returns(reward, discount, observation, next_observation, gamma: float) -> np.ndarray:
  """G_t = r_t + gamma * discount_t * G_{t+1} within each episode of transitions stored in episode order.

  An episode ends at a terminal (discount 0) or where the next transition does not start at this one's
  next_observation (a time-out or a new episode); a cut episode is bootstrapped with 0, as ActoReg's
  calc_return_to_go does.
  """
  reward = np.asarray(reward, np.float64)
  discount = np.asarray(discount, np.float64)
  n = len(reward)
  flat_obs = np.asarray(observation).reshape(n, -1)
  flat_next = np.asarray(next_observation).reshape(n, -1)
  continues = np.zeros(n, bool)
  continues[:-1] = np.all(flat_next[:-1] == flat_obs[1:], axis=1) & (discount[:-1] > 0)
  returns = np.zeros(n)
  following = 0.0
  for t in range(n - 1, -1, -1):
    following = reward[t] + gamma * discount[t] * (following if continues[t] else 0.0)
    returns[t] = following
  return returns


def value_range(transitions, gamma: float, v_min: Optional[float] = None, v_max: Optional[float] = None,
                v_expand: float = 0.0) -> Tuple[float, float]:
  """HL-Gauss support: [v_min, v_max] (the Monte-Carlo returns' range when not given), widened by v_expand * width,
  half on each side (ActoReg v_expand_mode 'both'; negative values shrink it)."""
  if v_min is None or v_max is None:
    returns = monte_carlo_returns(transitions["reward"], transitions["discount"], transitions["observation"],
                                  transitions["next_observation"], gamma)
    v_min = float(returns.min()) if v_min is None else v_min
    v_max = float(returns.max()) if v_max is None else v_max
  expand = v_expand * (v_max - v_min)
  return v_min - expand / 2.0, v_max + expand / 2.0


@gin.configurable(denylist=["time_step_spec", "action_spec", "transitions", "regularization", "seed",
                            "dr3_coefficient"])
class ReBracAgent(offline_actor_critic.OfflineActorCritic):
  """ReBRAC with an ensemble of LayerNorm critics, actor and critic BC penalties and every actor regularizer.

  Defaults are the study's ReBRAC-CE settings on locomotion (ActoReg configs/offline/rebrac-ce-mt/*): lr 1e-3,
  beta_c 0.001, HL-Gauss head, gamma 0.99, tau 0.005, policy noise 0.2 / clip 0.5, policy_freq 2, normalize_q.
  beta_a, num_classes and v_expand are per dataset (batch_rl_dr3/continuous/study.py). The HL-Gauss support is
  [v_min, v_max] widened by v_expand; unset bounds come from the Monte-Carlo returns of `transitions` (the training
  data), as ActoReg does (AntMaze sets 0 / 100).
  """

  METRICS = ("critic_loss", "actor_loss", "q_data", "target_q", "bc_mse", "dr3", "dot_product", "lambda")

  def __init__(self, time_step_spec, action_spec, transitions=None, critic_head: str = "hl_gauss",
               v_min: Optional[float] = None, v_max: Optional[float] = None, v_expand: float = 0.0, num_classes: int = 201, sigma_frac: float = 0.75,
               num_critics: int = 2, actor_hidden_units=(256, 256, 256), critic_hidden_units=(256, 256, 256),
               critic_layer_norm: bool = True, actor_learning_rate: float = 1e-3,
               critic_learning_rate: float = 1e-3, gamma: float = 0.99, tau: float = 0.005,
               actor_bc_coef: float = 0.001, critic_bc_coef: float = 0.001, policy_noise: float = 0.2,
               noise_clip: float = 0.5, policy_freq: int = 2, normalize_q: bool = True,
               regularization: Optional[actor_regularization.ActorRegularization] = None,
               dr3_coefficient: float = 0.0, seed: int = 0):
    if critic_head not in CRITIC_HEADS:
      raise ConfigError(f"ReBracAgent.critic_head={critic_head!r}; expected one of {CRITIC_HEADS}")
    regularization = regularization or actor_regularization.ActorRegularization()
    observation_spec = time_step_spec.observation
    actor = networks.DeterministicActorNetwork(observation_spec, action_spec, hidden_units=actor_hidden_units,
                                               regularization=regularization, seed=seed)
    actor.create_variables()
    super().__init__(time_step_spec, action_spec, actor, seed=seed, dr3_coefficient=dr3_coefficient,
                     name="ReBracAgent")
    self.regularization = regularization
    self._critic_head = critic_head
    outputs = num_classes if critic_head == "hl_gauss" else 1
    self._critics = []
    for i in range(num_critics):
      critic = networks.MlpCriticNetwork((observation_spec, action_spec), hidden_units=critic_hidden_units,
                                         layer_norm=critic_layer_norm, num_outputs=outputs, init="rebrac",
                                         name=f"critic_{i}")
      critic.create_variables()
      self._critics.append(critic)
    self._target_actor = actor.copy(name="target_actor")
    self._target_actor.create_variables()
    self._target_critics = [c.copy(name=f"target_critic_{i}") for i, c in enumerate(self._critics)]
    for target, critic in zip(self._target_critics, self._critics):
      target.create_variables()
      offline_actor_critic.soft_update(critic.variables, target.variables, tau=1.0)
    offline_actor_critic.soft_update(actor_regularization.polyak_variables(actor),
                                     actor_regularization.polyak_variables(self._target_actor), tau=1.0)
    self._critic_variables = [v for c in self._critics for v in c.trainable_variables]
    self.actor_optimizer = actor_regularization.RegularizedAdam(
        actor_learning_rate, actor.trainable_variables, regularization, seed=seed)
    self.critic_optimizer = actor_regularization.RegularizedAdam(critic_learning_rate, self._critic_variables,
                                                                 seed=seed + 1)
    if critic_head == "hl_gauss" and (v_min is None or v_max is None) and transitions is None:
      raise ConfigError("ReBracAgent: the HL-Gauss head needs v_min and v_max, or the training transitions")
    if critic_head == "hl_gauss":
      v_min, v_max = value_range(transitions, gamma, v_min, v_max, v_expand)
    else:
      v_min, v_max = 0.0, 1.0  # unused by the squared-error head
    self.value_support = (float(v_min), float(v_max))
    edges, centres = losses.hl_gauss_support(v_min, v_max, num_classes)
    self._edges, self._centres = edges, centres
    self._sigma = sigma_frac * (v_max - v_min) / num_classes
    self._gamma, self._tau = gamma, tau
    self._actor_bc_coef, self._critic_bc_coef = actor_bc_coef, critic_bc_coef
    self._policy_noise, self._noise_clip, self._policy_freq = policy_noise, noise_clip, policy_freq
    self._normalize_q = normalize_q
    self._low = float(np.min(action_spec.minimum))
    self._high = float(np.max(action_spec.maximum))

  # ------------------------------------------------------------------ accessors
  def label_settings(self):
    """What distinguishes this ReBRAC from the study's default in a run label: the original squared-error critic."""
    return {} if self._critic_head == "hl_gauss" else {"critic_head": self._critic_head}

  @property
  def target_actor_network(self):
    return self._target_actor

  def q_values(self, critic, observation, action):
    """(scalar Q [B], penultimate features) of one critic: the logits' expected bin value for HL-Gauss."""
    out, features = critic.features_and_q((observation, action))
    if self._critic_head == "hl_gauss":
      out = losses.hl_gauss_value(out, self._centres)
    return out, features

  def critic_features(self, observation, action, training=False):
    """(Q [B], penultimate features [B, d]) of critic 1 at (s, a)."""
    del training
    return self.q_values(self._critics[0], self.normalize(observation), tf.cast(action, tf.float32))

  def _min_q(self, critics, observation, action):
    return tf.reduce_min(tf.stack([self.q_values(c, observation, action)[0] for c in critics]), axis=0)

  # ------------------------------------------------------------------ the step
  def _critic_step(self, obs, action, reward, discount, next_obs, next_action):
    next_pi, _ = self._target_actor(next_obs, training=False)
    noise = self._policy_noise * self._normal(tf.shape(next_pi))
    next_pi = losses.noisy_target_actions(next_pi, noise, noise_clip=self._noise_clip, low=self._low,
                                          high=self._high)
    next_bc = losses.squared_action_distance(next_pi, next_action)
    next_q = self._min_q(self._target_critics, next_obs, next_pi)
    target = losses.rebrac_critic_target(reward, discount, next_q, next_bc, gamma=self._gamma,
                                         critic_bc_coef=self._critic_bc_coef)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(self._critic_variables)
      loss, q_data, dr3, dots = 0.0, [], [], []
      if self._critic_head == "hl_gauss":
        target_probs = losses.hl_gauss_probs(target, self._edges, self._sigma)
      for critic in self._critics:
        out, penalty, dot = self._critic_outputs(critic, obs, action, next_obs, next_pi, discount)
        dr3.append(penalty)
        dots.append(dot)
        if self._critic_head == "hl_gauss":
          loss += losses.hl_gauss_cross_entropy(out, target_probs)
          q_data.append(losses.hl_gauss_value(out, self._centres))
        else:
          loss += tf.reduce_mean(tf.square(out - target))
          q_data.append(out)
      dr3_metrics, dr3_term = self._dr3_metrics(dr3, dots)
      td_loss = loss
      loss += dr3_term
    grads = tape.gradient(loss, self._critic_variables)
    self.critic_optimizer.apply_gradients(zip(grads, self._critic_variables))
    metrics = {"critic_loss": td_loss, "q_data": tf.reduce_mean(tf.reduce_min(tf.stack(q_data), 0)),
               "target_q": tf.reduce_mean(target), **dr3_metrics}
    return metrics

  def actor_loss(self, obs, action, training=True):
    """ReBRAC's actor loss on a batch and the BC term, with this step's BC noise when training."""
    pi, _ = self._actor_network(obs, training=training)
    target = action
    if training and self.regularization.bc_noise > 0:
      target = action - self.regularization.bc_noise * self._normal(tf.shape(action))
    bc = losses.squared_action_distance(pi, target)
    q = self._min_q(self._critics, obs, pi)
    loss = losses.rebrac_actor_loss(q, bc, actor_bc_coef=self._actor_bc_coef, normalize_q=self._normalize_q)
    lam = 1.0 / tf.reduce_mean(tf.abs(q)) if self._normalize_q else tf.constant(1.0)
    return loss, tf.reduce_mean(tf.square(pi - action)), lam

  def _actor_step(self, obs, action):
    variables = self._actor_network.trainable_variables
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(variables)
      loss, bc_mse, lam = self.actor_loss(obs, action, training=True)
    grads = tape.gradient(loss, variables)
    # ActoReg blends the actor target with the parameters of *before* this step's actor update.
    offline_actor_critic.soft_update(actor_regularization.polyak_variables(self._actor_network),
                                     actor_regularization.polyak_variables(self._target_actor), self._tau)
    self.actor_optimizer.apply_gradients(zip(grads, variables))
    for critic, target in zip(self._critics, self._target_critics):
      offline_actor_critic.soft_update(critic.variables, target.variables, self._tau)
    return loss, bc_mse, lam

  def _train(self, batch):
    obs = self.normalize(batch["observation"])
    next_obs = self.normalize(batch["next_observation"])
    action = tf.cast(batch["action"], tf.float32)
    next_action = tf.cast(batch["next_action"], tf.float32)
    metrics = self._critic_step(obs, action, tf.cast(batch["reward"], tf.float32),
                                tf.cast(batch["discount"], tf.float32), next_obs, next_action)
    previous = (self._metric_vars["actor_loss"].read_value(), self._metric_vars["bc_mse"].read_value(),
                self._metric_vars["lambda"].read_value())
    actor_loss, bc_mse, lam = tf.cond(self.train_step_counter % self._policy_freq == 0,
                                      lambda: self._actor_step(obs, action), lambda: previous)
    metrics.update(actor_loss=actor_loss, bc_mse=bc_mse, **{"lambda": lam})
    return metrics
