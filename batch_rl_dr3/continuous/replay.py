"""Uniform sampling from in-memory transition arrays, as tf-agents `Transition` batches.

The arrays live in non-trainable tf.Variables (never captured as graph constants: they can exceed 2 GB) and are
NOT checkpointed (they are reloaded from the dataset); the index generator IS checkpointed, so a resumed run
draws the same batches as an uninterrupted one.
"""
from typing import Dict

import numpy as np
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import policy_step
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory

from batch_rl_dr3.data.rlds import OPTIONAL_TRANSITION_KEYS, TRANSITION_KEYS
from batch_rl_dr3.errors import DataError


class TransitionReplay(tf.Module):
  """Batches of `batch_size` transitions drawn uniformly with replacement."""

  def __init__(self, arrays: Dict[str, np.ndarray], batch_size: int, seed: int, source: str = "dataset"):
    super().__init__(name="TransitionReplay")
    missing = [k for k in TRANSITION_KEYS if k not in arrays]
    if missing:
      raise DataError(f"{source}: transitions lack {missing}; expected keys {list(TRANSITION_KEYS)}")
    sizes = {k: len(arrays[k]) for k in TRANSITION_KEYS}
    if len(set(sizes.values())) != 1:
      raise DataError(f"{source}: transition arrays have different lengths {sizes}")
    self.size = sizes["reward"]
    self.batch_size = batch_size
    # Kept off the module's trackable attributes: the runner must not checkpoint the dataset itself.
    keys = TRANSITION_KEYS + tuple(k for k in OPTIONAL_TRANSITION_KEYS if k in arrays)
    bad = [k for k in keys if len(arrays[k]) != self.size]
    if bad:
      raise DataError(f"{source}: {bad} have another length than the {self.size} rewards")
    self._data = {k: tf.Variable(np.asarray(arrays[k]), trainable=False, name=k) for k in keys}
    self.generator = tf.random.Generator.from_seed(seed)

  def _trackable_children(self, save_type="checkpoint", **kwargs):
    children = super()._trackable_children(save_type, **kwargs)
    return {k: v for k, v in children.items() if k != "_data"}

  @property
  def keys(self):
    """The transition fields held (TRANSITION_KEYS, plus `next_action` when the data has it)."""
    return tuple(self._data)

  @property
  def observation_spec(self):
    v = self._data["observation"]
    return tf.TensorSpec(v.shape[1:], v.dtype, name="observation")

  def action_spec(self, minimum=-1.0, maximum=1.0):
    v = self._data["action"]
    return tensor_spec.BoundedTensorSpec(v.shape[1:], tf.float32, minimum=minimum, maximum=maximum,
                                         name="action")

  def sample_indices(self):
    return self.generator.uniform([self.batch_size], 0, self.size, dtype=tf.int64)

  def gather(self, indices) -> Dict[str, tf.Tensor]:
    return {k: tf.gather(v, indices) for k, v in self._data.items()}

  def sample(self) -> Dict[str, tf.Tensor]:
    return self.gather(self.sample_indices())


def to_tf_agents_transition(batch: Dict[str, tf.Tensor]) -> trajectory.Transition:
  """A transition dict -> tf-agents Transition (reward and discount sit on the next time step, as tf-agents reads them)."""
  reward = tf.cast(batch["reward"], tf.float32)
  mid = tf.fill(tf.shape(reward), ts.StepType.MID)
  time_step = ts.TimeStep(step_type=mid, reward=tf.zeros_like(reward), discount=tf.ones_like(reward),
                          observation=batch["observation"])
  next_time_step = ts.TimeStep(step_type=mid, reward=reward, discount=tf.cast(batch["discount"], tf.float32),
                               observation=batch["next_observation"])
  action = policy_step.PolicyStep(action=tf.cast(batch["action"], tf.float32), state=(), info=())
  return trajectory.Transition(time_step=time_step, action_step=action, next_time_step=next_time_step)
