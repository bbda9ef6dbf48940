"""The actor diagnostics of the actor-regularization study (Tarasov et al. 2024, reference §4), per evaluation.

`ActorProbes(agent, train, validation, seed)` holds the study's fixed batches and `metrics(eval_states)` returns,
for each batch, the §4 measures of the actor's trunk (`diagnostics.actor_feature_metrics`: dead-unit fraction,
feature norm / mean / std, PCA rank, per-layer dead fractions) and `action_mse` (per-element MSE between the
deterministic action and the batch's action), under the keys
  actor_validation/...  all transitions of the held-out validation split,
  actor_train/...       the first n training transitions in dataset order, n = the validation size (the study's
                        choice; `train_batch_size` when there is no validation split),
  actor_eval_states/... the states the policy saw during that evaluation's rollouts (no action_mse),
  actor_random/...      n states uniform in the per-dimension [min, max] box of training states, actions uniform in
                        [-1, 1] (drawn once, seeded),
plus the plasticity probe on the validation split (`diagnostics.plasticity_probe`: plasticity/start_loss,
plasticity/start_mse, plasticity/bc_loss). The agent provides `actor_features(observations, training)`,
`actor_network` and `actor_optimizer`.
"""
from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from batch_rl_dr3 import diagnostics


ACTION_NOISE, STATE_NOISE = 0.2, 0.05  # ActoReg's noisy_eval (reference §4)


def noisy_evaluations(agent) -> Dict[str, Dict[str, object]]:
  """{name: evaluation.evaluate keyword arguments} of the two noisy evaluations. The state noise goes on what the
  actor sees: for an agent that standardises observations (IQL; its public `observation_normalizer`) 0.05 in
  standardised units is 0.05 * std per dimension of the raw observation."""
  normalizer = getattr(agent, "observation_normalizer", None)
  state_noise = STATE_NOISE if normalizer is None else STATE_NOISE * normalizer.std.numpy()
  return {"action_noise": {"action_noise": ACTION_NOISE}, "state_noise": {"state_noise": state_noise}}


class ActorProbes:
  """The §4 batches of one run and the metrics on them (see the module docstring)."""

  def __init__(self, agent, train: Dict[str, np.ndarray], validation: Dict[str, np.ndarray], seed: int,
               plasticity_steps: int = 100, plasticity_batch_size: Optional[int] = None,
               train_batch_size: int = 1000):
    self._agent = agent
    self._plasticity_steps = plasticity_steps
    n = len(validation["reward"]) if validation and len(validation["reward"]) else train_batch_size
    self.batches = {"train": (train["observation"][:n], train["action"][:n])}
    if validation and len(validation["reward"]):
      self.batches["validation"] = (validation["observation"], validation["action"])
    low, high = train["observation"].min(axis=0), train["observation"].max(axis=0)
    rng = np.random.default_rng(seed)
    action_shape = (n,) + train["action"].shape[1:]
    self.batches["random"] = (rng.uniform(low, high, (n,) + low.shape).astype(train["observation"].dtype),
                              rng.uniform(-1.0, 1.0, action_shape).astype(np.float32))
    self._plasticity_batch = None
    if "validation" in self.batches and plasticity_steps > 0:
      observations, actions = self.batches["validation"]
      rows = len(observations) if plasticity_batch_size is None else min(plasticity_batch_size, len(observations))
      self._plasticity_batch = (observations[:rows], actions[:rows])

  def batch_metrics(self, observations, actions=None) -> Dict[str, float]:
    out = self._agent.actor_features(tf.constant(observations), training=False)
    metrics = diagnostics.actor_feature_metrics(out.pre_activations)
    if actions is not None:
      metrics["action_mse"] = float(tf.reduce_mean(tf.square(tf.cast(out.actions, tf.float32) - actions)))
    return metrics

  def plasticity(self) -> Dict[str, float]:
    if self._plasticity_batch is None:
      return {}
    network, optimizer = self._agent.actor_network, self._agent.actor_optimizer
    state = [network, optimizer] + ([self._agent.seed_generator] if hasattr(self._agent, "seed_generator") else [])
    result = diagnostics.plasticity_probe(
        lambda obs: self._agent.actor_features(obs, training=True).actions, network.trainable_variables,
        *self._plasticity_batch, optimizer, steps=self._plasticity_steps, state=state)
    return {f"plasticity/{k}": v for k, v in result.items()}

  def metrics(self, eval_states=None) -> Dict[str, float]:
    out = {}
    for name, (observations, actions) in self.batches.items():
      out.update({f"actor_{name}/{k}": v for k, v in self.batch_metrics(observations, actions).items()})
    if eval_states is not None and len(eval_states):
      states = np.stack(eval_states).astype(self.batches["train"][0].dtype)
      out.update({f"actor_eval_states/{k}": v for k, v in self.batch_metrics(states).items()})
    out.update(self.plasticity())
    return out
