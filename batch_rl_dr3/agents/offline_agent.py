"""`OfflineAgent`: the one offline Atari agent (online + target network, Adam, penalties, metrics).

The algorithm-specific part of a step is a single method, `algorithm_loss`, written once per agent in
`dqn.py`, `rem.py`, `cql_qr.py`; everything else (forward passes, backup action, penalties, optimizer, target
sync, acting, diagnostics) lives here.

One gradient step is ONE compiled function, `train_step()`: in-graph sample -> forward -> loss -> penalties ->
gradients -> Adam -> target sync -> metrics, traced once. Coefficients (each penalty's c0, CQL alpha) are
tf.Variables, so changing them never retraces.

Regularizers are `regularizers.Penalty` objects in a list (gin: `OfflineAgent.penalties = [@DR3()]`); each adds
coefficient * value to the loss and its metrics to the step's. DR3's phi(s', a') is phi(s') here: for a discrete
Q-network the action a' only picks the output head, so the features do not depend on it. Its pieces are public for tf.distribute wrappers:

    head_weights = agent.draw_head_weights()                      # REM's mixture; None for the others
    loss, metrics = agent.compute_loss(batch, head_weights, global_batch_size=GLOBAL_B)   # per replica
    agent.apply_gradients(grads)                                  # grads of loss w.r.t. agent.trainable_weights
    agent.maybe_sync_target()

`jit_compile` defaults to False: on this CPU plain graph mode ran the step faster than XLA (see
benchmarks/bench_agents.py, which measures both); turn it on for GPU/TPU.

Reward clipping: the DQN Replay data stores rewards already clipped to [-1, 1] per step (Dopamine's runner
clips before storing), and the batch's reward is the n-step discounted sum of those, which is what Dopamine
trains on; so `clip_rewards` is False by default. Set it for data logged without clipping; it clips the
sampled reward, which equals Dopamine's per-step clipping only when update_horizon = 1.

Everything an identical continuation needs (networks, target networks, Adam slots and step, the gradient step
counter, the agent's RNG, and the sampler when it is a tf.Module) hangs off the agent, so
`tf.train.Checkpoint(agent=agent)` saves and restores it.
"""
from typing import Dict, Optional, Sequence

from absl import logging
import gin
import numpy as np
import tensorflow as tf

from batch_rl_dr3 import diagnostics
from batch_rl_dr3 import labels
from batch_rl_dr3 import losses
from batch_rl_dr3 import networks
from batch_rl_dr3 import regularizers
from batch_rl_dr3.agents.behavior_policy import BehaviorPolicy
from batch_rl_dr3.errors import ConfigError

OBSERVATION_SHAPE = (84, 84, 4)


def _reduce(per_example, global_batch_size):
  """Mean over the local batch, or the local share of the global mean under tf.distribute."""
  if global_batch_size is None:
    return tf.reduce_mean(per_example)
  return tf.reduce_sum(per_example) / tf.cast(global_batch_size, per_example.dtype)


@gin.configurable
class OfflineAgent(tf.Module):
  """Base offline agent. Subclasses set `make_network`, `acting_q` (optional) and `algorithm_loss`."""

  def __init__(self, num_actions: int, sampler, *, backup: str = "q_learning",
               learning_rate: float = 5e-5, adam_epsilon: float = 3.125e-4,
               target_update_period: int = 2000, clip_rewards: bool = False, huber_delta: float = 1.0,
               penalties: Sequence[regularizers.Penalty] = (),
               reinitialize_layers: Sequence[str] = (), reinitialize_at_steps: Sequence[int] = (),
               next_state_metrics: bool = True, next_state_metrics_every: int = 32,
               jit_compile: bool = False, seed: int = 0,
               data_setting: Optional[str] = None, name: Optional[str] = None):
    """
    Args:
      num_actions: size of the discrete action set.
      sampler: any object whose `sample()` returns the batch dict of DESIGN.md (callable in a tf.function).
      backup: 'q_learning' (max backup), 'sarsa' (dataset next action), 'monte_carlo' (regress on the
        return-to-go) or 'behavior_policy' (a' ~ pi_beta, a `BehaviorPolicy` cloned from the same data before
        the first Q step); see `losses.BACKUPS`.
      learning_rate, adam_epsilon: Adam, as Agarwal et al. 2020 (5e-5, 3.125e-4 = 0.01 / 32).
      target_update_period: gradient steps between target syncs (2000 = 8000 agent steps / update period 4).
      clip_rewards: clip the batch reward to [-1, 1] (see the module docstring).
      huber_delta: Huber threshold of the TD / MC losses and kappa of the quantile loss.
      penalties: `regularizers.Penalty` objects added to the loss (DR3 in any form, srank, ...), each with its
        coefficient as a tf.Variable: a penalty built with coefficient 0 can be raised later without retracing,
        and gives the same parameters as no penalty while it is 0.
      reinitialize_layers, reinitialize_at_steps: re-initialize these layers of the online network ('head',
        'features', 'conv3', ...; see `networks.named_layers`) after each of these gradient steps (counted from
        1 over the whole run), as the paper's appendix robustness study (Zhang et al. 2019); the runner calls
        `reinitialize(step)`. See `reinitialize_layers_now`.
      next_state_metrics: compute phi(s') for the metrics dot_product, dot_product_abs and next_feature_norm
        even when no penalty needs it (a forward pass with no backward: about 20 % of a DQN step on CPU).
        False drops those metrics; with a penalty that reads phi(s') they are computed every step.
      next_state_metrics_every: when only those metrics need phi(s'), compute them on every k-th gradient step
        (steps 0, k, 2k, ...; weighted metrics, `diagnostics.weighted`, so the run averages them over the steps
        that computed them). 32: the pass costs ~0.6 % of a DQN step, and a 62,500-step iteration still averages
        ~1,950 batches. 1: every step.
      jit_compile: compile train_step / select_action with XLA.
      seed: seed of the agent's RNG (REM mixtures, epsilon-greedy).
      data_setting: the dataset's setting ('1pct', '5pct', ...), for settings that depend on it (CQL alpha).
    """
    super().__init__(name=name or type(self).__name__)
    self.num_actions = int(num_actions)
    self.sampler = sampler
    self.backup = losses.check_backup(backup, f"{type(self).__name__}.backup")
    if target_update_period < 1:
      raise ConfigError(f"{type(self).__name__}.target_update_period={target_update_period}; expected >= 1")
    self.target_update_period = int(target_update_period)
    self.clip_rewards = bool(clip_rewards)
    self.huber_delta = float(huber_delta)
    self.learning_rate = float(learning_rate)
    self.adam_epsilon = float(adam_epsilon)
    self.data_setting = data_setting
    self.jit_compile = bool(jit_compile)
    self.penalties = check_penalties(penalties, f"{type(self).__name__}.penalties")
    self.needs_next_features = any(p.needs_next_features for p in self.penalties)
    self.next_state_metrics = bool(next_state_metrics)
    if int(next_state_metrics_every) < 1:
      raise ConfigError(f"{type(self).__name__}.next_state_metrics_every={next_state_metrics_every}; expected >= 1")
    self.next_state_metrics_every = int(next_state_metrics_every)
    # One online forward over [s; s'] (2B) instead of two over B: measured faster on CPU with DR3 on.
    self._fused_next_forward = True
    self.gradient_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="gradient_steps")
    self.seed = int(seed)
    self.rng = tf.random.Generator.from_seed(seed)

    self.online_network = self.make_network(self.num_actions, "online")
    self.target_network = self.make_network(self.num_actions, "target")
    dummy = tf.zeros((1,) + OBSERVATION_SHAPE, tf.uint8)
    self.online_network(dummy)
    self.target_network(dummy)
    self.sync_target()
    self.reinitialize_layers = tuple(reinitialize_layers)
    self.reinitialize_at_steps = tuple(sorted(int(s) for s in reinitialize_at_steps))
    unknown = sorted(set(self.reinitialize_layers) - set(networks.named_layers(self.online_network)))
    if unknown or bool(self.reinitialize_layers) != bool(self.reinitialize_at_steps) or (
        self.reinitialize_at_steps and self.reinitialize_at_steps[0] < 1):
      raise ConfigError(f"{type(self).__name__}: reinitialize_layers={list(self.reinitialize_layers)}, "
                        f"reinitialize_at_steps={list(self.reinitialize_at_steps)}; expected layers among "
                        f"{list(networks.named_layers(self.online_network))}, steps >= 1, both or neither given")
    # The legacy Keras Adam applies each variable with one fused ResourceApplyAdam kernel, as Dopamine's
    # tf.compat.v1 AdamOptimizer does (same epsilon-hat form); the newer Keras Adam spends several
    # elementwise passes per variable and made the whole step ~1.4x slower on CPU (bench_agents).
    self.optimizer = tf.keras.optimizers.legacy.Adam(learning_rate=learning_rate, epsilon=adam_epsilon)
    # Slots now rather than at the first step, so a checkpoint restores into them directly.
    self.optimizer._create_all_weights(self.online_network.trainable_variables)  # pylint: disable=protected-access
    # The TD-learning arm of the paper's Fig. 1: pi_beta, cloned on the agent's own sampler before Q trains.
    self.behavior_policy = BehaviorPolicy(self.num_actions) if self.backup == "behavior_policy" else None
    self._behavior_policy_ready = self.behavior_policy is None

    self._train_step_fn = tf.function(self._train_step, jit_compile=self.jit_compile)
    self._select_action_fn = tf.function(
        self._select_action, jit_compile=self.jit_compile,
        input_signature=[tf.TensorSpec((None,) + OBSERVATION_SHAPE, tf.uint8),
                         tf.TensorSpec((), tf.float32)])
    self._diagnostics_fn = tf.function(self._representation_diagnostics)

  # ---- what a concrete agent defines ---------------------------------------------------------------
  def make_network(self, num_actions: int, name: str):
    raise NotImplementedError

  def draw_head_weights(self):
    """Per-step random inputs of the loss (REM's mixture weights); None when the loss has none."""
    return None

  def acting_q(self, output, head_weights=None):
    """Q-values [B, A] that the backup's argmax and acting use: the network's mean over heads/quantiles."""
    return output.q_values

  def algorithm_loss(self, batch, online, target_next, next_actions, head_weights):
    """(per-example loss [B], {metric name: scalar}) of the algorithm, e.g. {'td_loss': ...}.

    online: the online network's output at s; target_next: the target network's at s' (None for the
    'monte_carlo' backup); next_actions: a' of the backup [B].
    """
    raise NotImplementedError

  def hyperparameters(self) -> Dict[str, object]:
    """The settings that shape what the agent learns (for the run's label; see `batch_rl_dr3.labels`)."""
    values = {"backup": self.backup, "learning_rate": self.learning_rate, "adam_epsilon": self.adam_epsilon,
              "target_update_period": self.target_update_period, "clip_rewards": self.clip_rewards,
              "huber_delta": self.huber_delta, "reinitialize_layers": self.reinitialize_layers,
              "reinitialize_at_steps": self.reinitialize_at_steps}
    if self.behavior_policy is not None:  # pi_beta's cloning length shapes the TD-learning arm's a'
      values["bc_pretrain_steps"] = self.behavior_policy.pretrain_steps
    return values

  def hyperparameter_defaults(self) -> Dict[str, object]:
    """The constructor defaults of `hyperparameters()`'s entries (what a run with no binding would use)."""
    return labels.constructor_defaults(type(self))

  def label_parts(self) -> Dict[str, object]:
    """What `labels.run_label` needs: the hyperparameters differing from the defaults and the penalties' parts."""
    return labels.label_parts(self.hyperparameters(), self.hyperparameter_defaults(), self.penalties)

  # ---- the step's pieces ---------------------------------------------------------------------------
  @property
  def trainable_weights(self):
    return self.online_network.trainable_variables

  def _prepare(self, batch):
    batch = dict(batch)
    for key in ("reward", "terminal", "discount", "return_to_go"):
      if key in batch:
        batch[key] = tf.cast(batch[key], tf.float32)
    for key in ("action", "next_action"):
      if key in batch:
        batch[key] = tf.cast(batch[key], tf.int32)
    if self.clip_rewards:
      batch["reward"] = tf.clip_by_value(batch["reward"], -1.0, 1.0)
    return batch

  def _online_outputs(self, batch):
    """The online network at s and s' (None at s' when no penalty needs it)."""
    if self.needs_next_features:
      if self._fused_next_forward:
        both = self.online_network(tf.concat([batch["state"], batch["next_state"]], axis=0))
        size = tf.shape(batch["state"])[0]
        return (tf.nest.map_structure(lambda x: x[:size], both),
                tf.nest.map_structure(lambda x: x[size:], both))
      return self.online_network(batch["state"]), self.online_network(batch["next_state"])
    return self.online_network(batch["state"]), None

  def _next_state_metrics(self, batch, features):
    """dot_product, dot_product_abs, next_feature_norm on every `next_state_metrics_every`-th step (a forward at
    s' with no gradient path, so no backward pass), weighted by whether this step computed them."""
    computed = tf.equal(self.gradient_steps % self.next_state_metrics_every, 0)
    features = tf.stop_gradient(features)

    def compute():
      next_features = tf.stop_gradient(self.online_network(batch["next_state"]).features)
      dot, dot_abs = diagnostics.dot_product_stats(features, next_features)
      return dot, dot_abs, diagnostics.mean_feature_norm(next_features)

    def skip():
      return tf.zeros([]), tf.zeros([]), tf.zeros([])

    dot, dot_abs, norm = tf.cond(computed, compute, skip)
    return diagnostics.weighted({"dot_product": dot, "dot_product_abs": dot_abs, "next_feature_norm": norm},
                                tf.cast(computed, tf.float32))

  def compute_loss(self, batch, head_weights=None, global_batch_size=None):
    """(total loss, metrics) for one batch; pure w.r.t. the batch given the weights and head_weights.

    Args:
      batch: the transition dict of DESIGN.md.
      head_weights: REM's mixture weights; drawn from the agent's RNG when None (REM only).
      global_batch_size: under tf.distribute, the batch size summed over replicas: per-example terms are
        summed and divided by it (and batch-level penalties scaled by local / global), so that summing the
        replicas' gradients gives the global-batch gradient. None: plain means over `batch`.
    """
    batch = self._prepare(batch)
    if head_weights is None:
      head_weights = self.draw_head_weights()
    online, online_next = self._online_outputs(batch)
    if self.backup == "monte_carlo":
      target_next, next_actions = None, batch["next_action"]
    elif self.backup == "behavior_policy":
      target_next = self.target_network(batch["next_state"])
      next_actions = self.behavior_policy.sample(batch["next_state"], self.rng.make_seeds(1)[:, 0])
    else:
      target_next = self.target_network(batch["next_state"])
      next_actions = losses.backup_actions(
          self.backup, self.acting_q(target_next, head_weights), batch["next_action"])
    per_example, algorithm_metrics = self.algorithm_loss(batch, online, target_next, next_actions, head_weights)
    algorithm_loss = _reduce(per_example, global_batch_size)
    local_share = 1.0 if global_batch_size is None else (
        tf.cast(tf.shape(per_example)[0], tf.float32) / tf.cast(global_batch_size, tf.float32))

    total = algorithm_loss
    metrics = dict(algorithm_metrics)
    if online_next is not None:
      dot, dot_abs = diagnostics.dot_product_stats(online.features, online_next.features)
      metrics.update({"dot_product": dot, "dot_product_abs": dot_abs,
                      "next_feature_norm": diagnostics.mean_feature_norm(online_next.features)})
    elif self.next_state_metrics:
      metrics.update(self._next_state_metrics(batch, online.features))
    if self.penalties:
      inputs = self.penalty_inputs(batch, online, online_next, next_actions, head_weights)
      for penalty in self.penalties:
        term, penalty_metrics = penalty.loss(inputs, local_share)
        total = total + term
        metrics.update(penalty_metrics)

    q_values = self.acting_q(online, head_weights)
    metrics.update({
        "cql_gap": tf.reduce_mean(losses.cql_gap(q_values, batch["action"])),
        "q_data": diagnostics.average_q(q_values, batch["action"]),
        "q_max": diagnostics.average_q(q_values),
        "feature_norm": diagnostics.mean_feature_norm(online.features),
        "total_loss": total,
    })
    return total, metrics

  def penalty_inputs(self, batch, online, online_next, next_actions, head_weights) -> regularizers.PenaltyInputs:
    """The penalties' view of a batch: phi(s), phi(s') (= phi(s', a'), see the module docstring), the terminal
    mask, the discount, and Q(s, a), Q(s', a') of the online network as a function of its weights, with Q the
    acting Q (REM's mixture with this step's weights, CQL-QR's mean over quantiles) and a' the backup's action."""
    states = tf.concat([batch["state"], batch["next_state"]], axis=0)
    actions = tf.concat([batch["action"], tf.cast(next_actions, tf.int32)], axis=0)
    size = tf.shape(batch["state"])[0]

    def q_fn():
      both = losses.select_actions(self.acting_q(self.online_network(states), head_weights), actions)
      return both[:size], both[size:]

    return regularizers.PenaltyInputs(
        features=online.features, next_features=None if online_next is None else online_next.features,
        mask=1.0 - batch["terminal"], discount=batch["discount"], q_fn=q_fn, variables=self.trainable_weights)

  def apply_gradients(self, grads):
    """One Adam update of the online network, then count the gradient step."""
    self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
    self.gradient_steps.assign_add(1)

  def sync_target(self):
    for target, online in zip(self.target_network.variables, self.online_network.variables):
      target.assign(online)

  def maybe_sync_target(self):
    """Copy online -> target on Dopamine's schedule: after the gradient steps whose 0-based index is a
    multiple of target_update_period (Dopamine checks `training_steps % period == 0` after training,
    before incrementing), i.e. after steps 1, P + 1, 2P + 1, ... counted from 1."""
    due = tf.equal((self.gradient_steps - 1) % self.target_update_period, 0)

    def _sync():
      self.sync_target()
      return tf.constant(True)

    return tf.cond(due, _sync, lambda: tf.constant(False))

  def _train_step(self):
    batch = self.sampler.sample()
    head_weights = self.draw_head_weights()
    with tf.GradientTape() as tape:
      loss, metrics = self.compute_loss(batch, head_weights)
    grads = tape.gradient(loss, self.trainable_weights)
    self.apply_gradients(grads)
    self.maybe_sync_target()
    return metrics

  def train_step(self) -> Dict[str, tf.Tensor]:
    """One compiled gradient step (sample + loss + update + target sync); returns the metrics dict.

    With the 'behavior_policy' backup the first call first clones pi_beta (`pretrain_behavior_policy`)."""
    self.pretrain_behavior_policy()
    return self._train_step_fn()

  def pretrain_behavior_policy(self) -> None:
    """Behaviour cloning on the agent's sampler until pi_beta has its `pretrain_steps` (none after a resume:
    the steps done are saved with the agent); then pi_beta stays fixed. A no-op for the other backups."""
    if self._behavior_policy_ready:
      return
    policy = self.behavior_policy
    remaining = policy.pretrain_steps - int(policy.steps_done)
    if remaining > 0:
      step = tf.function(lambda: policy.train_step(self.sampler.sample()), jit_compile=self.jit_compile)
      losses_seen = [step() for _ in range(remaining)]
      logging.info("behaviour cloning: %d steps, cross-entropy %.4f -> %.4f", remaining, float(losses_seen[0]),
                   float(losses_seen[-1]))
    self._behavior_policy_ready = True

  @property
  def train_step_tracing_count(self) -> int:
    return self._train_step_fn.experimental_get_tracing_count()

  # ---- layer re-initialization (the paper's appendix robustness study) ---------------------------------
  def reinitialize_layers_now(self, names: Sequence[str], seed: int) -> None:
    """Re-initializes the named layers of the online network: the k-th named layer's weights (in the order
    of `networks.named_layers`) get fresh values from their own initializers seeded with seed + k (a fresh
    layer built with that seed; biases: zeros), and their Adam moments restart at zero. Every other weight,
    the target network and the step counters are untouched (the target catches up at its next sync)."""
    for k, (name, layer) in enumerate(networks.named_layers(self.online_network).items()):
      if name not in names:
        continue
      for variable, initializer in ((layer.kernel, layer.kernel_initializer), (layer.bias, layer.bias_initializer)):
        config = initializer.get_config()
        if "seed" in config:
          config["seed"] = int(seed) + k
        variable.assign(type(initializer).from_config(config)(variable.shape, variable.dtype))
        for slot in ("m", "v"):
          self.optimizer.get_slot(variable, slot).assign(tf.zeros_like(variable))

  def reinitialization_steps(self) -> Sequence[int]:
    """The gradient steps after which `reinitialize` re-initializes layers (reinitialize_at_steps)."""
    return self.reinitialize_at_steps

  def reinitialize(self, gradient_step: int) -> None:
    """Called by the runner after gradient step `gradient_step`: re-initializes reinitialize_layers when the
    step is one of reinitialize_at_steps, with a seed derived from the agent's seed and the step."""
    if gradient_step in self.reinitialize_at_steps:
      seed = int(np.random.SeedSequence([self.seed, int(gradient_step)]).generate_state(1)[0] >> 1)
      self.reinitialize_layers_now(self.reinitialize_layers, seed)

  # ---- acting and diagnostics ------------------------------------------------------------------------
  def _select_action(self, states, epsilon):
    greedy = tf.argmax(self.online_network(states).q_values, axis=1, output_type=tf.int32)
    batch_size = tf.shape(states)[0]
    explore = self.rng.uniform([batch_size]) < epsilon
    random_actions = self.rng.uniform([batch_size], 0, self.num_actions, dtype=tf.int32)
    return tf.where(explore, random_actions, greedy)

  def select_action(self, states, epsilon: float):
    """Epsilon-greedy actions int32 [B] for uint8 states [B, 84, 84, 4], greedy on the mean Q."""
    return self._select_action_fn(tf.convert_to_tensor(states, tf.uint8), tf.constant(epsilon, tf.float32))

  def _representation_diagnostics(self, batch):
    batch = self._prepare(batch)
    online = self.online_network(batch["state"])
    online_next = self.online_network(batch["next_state"])
    q_values = online.q_values
    dot, dot_abs = diagnostics.dot_product_stats(online.features, online_next.features)
    # Prop. 3.2 over the bootstrapped transitions, gamma = the backup's discount gamma^n (the batch's largest).
    bootstrapped = tf.cast(batch["discount"] > 0.0, tf.float32)
    dot_sum, norm_bound = diagnostics.prop32_condition(
        online.features, online_next.features, tf.reduce_max(batch["discount"]), mask=bootstrapped)
    return {
        "srank": diagnostics.srank(online.features),
        "fixed_batch/prop32_dot_sum": dot_sum,
        "fixed_batch/prop32_norm_bound": norm_bound,
        "fixed_batch/prop32_ratio": dot_sum / norm_bound,
        "fixed_batch/dot_product": dot,
        "fixed_batch/dot_product_abs": dot_abs,
        "fixed_batch/feature_norm": diagnostics.mean_feature_norm(online.features),
        "fixed_batch/next_feature_norm": diagnostics.mean_feature_norm(online_next.features),
        "fixed_batch/q_data": diagnostics.average_q(q_values, batch["action"]),
        "fixed_batch/q_max": diagnostics.average_q(q_values),
        # the actor-regularization study's measures, on the Nature torso's post-ReLU features
        "fixed_batch/dead_neurons_frac": diagnostics.dead_neuron_fraction(online.features),
        "fixed_batch/pca_rank": diagnostics.pca_rank(online.features),
    }

  def representation_diagnostics(self, batch) -> Dict[str, tf.Tensor]:
    """srank (delta 0.01), dot products, feature norms, average Q, dead-unit fraction and PCA rank on a fixed batch
    (not XLA: SVD), and the two sides of the paper's Prop. 3.2 (`diagnostics.prop32_condition`): linear TD on
    these features cannot converge when prop32_ratio = dot_sum / norm_bound >= 1."""
    return self._diagnostics_fn({k: batch[k] for k in ("state", "next_state", "action", "discount")})


def check_penalties(penalties, where: str):
  """The list of penalties, or one ConfigError line if an entry is not a Penalty or two share a metric name."""
  penalties = list(penalties or ())
  for penalty in penalties:
    if not isinstance(penalty, regularizers.Penalty):
      raise ConfigError(f"{where}: {penalty!r} is not a penalty; expected objects such as @DR3() or "
                        f"@SrankPenalty()")
  names = [p.metric_name for p in penalties]
  if len(set(names)) != len(names):
    raise ConfigError(f"{where}: two penalties log the same metric ({names}); give one a different form")
  return penalties
