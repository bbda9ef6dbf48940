"""Two samplers of a `FixedReplay`, both uniform over all valid transitions of the resident data, i.i.d. with
replacement:

* `InGraphSampler`: a `tf.Module` whose `sample()` is built from TF ops only (works in plain and XLA-compiled
  `tf.function`s); its `tf.random.Generator` is checkpointed with it, so a resumed run draws the same batches.
* `make_tf_dataset`: a `tf.data.Dataset` of batches, reproducible from its seed.

batch_rl's `FixedReplayBuffer` instead picks one resident checkpoint per batch and samples the whole batch
from it: every checkpoint gets the same share of batches whatever its number of valid transitions, and the
transitions of one batch are correlated. Ours draw each transition independently.
"""
from typing import Dict, Optional

import gin
import tensorflow as tf

from batch_rl_dr3.data.frame_store import FRAME_UNPACKING
from batch_rl_dr3.errors import ConfigError


@gin.configurable
class InGraphSampler(tf.Module):
  """Uniform i.i.d. batches over the resident valid transitions, from TF ops only (XLA-compatible).

  The frames and tables are the replay's variables (shared by every sampler of it, and not saved in
  checkpoints); the sampler's own state is its `tf.random.Generator`, so `tf.train.Checkpoint(sampler=...)`
  restores the exact next batch.
  """

  def __init__(self, replay: "FixedReplay", batch_size: int = 32, seed: int = 0, name: Optional[str] = None,
               frame_unpacking: str = "transpose"):
    """`frame_unpacking`: 'transpose' (fastest in graph mode, the CPU default) or 'swar' (fastest inside an
    XLA-compiled step); both give identical batches."""
    super().__init__(name=name)
    if batch_size < 1:
      raise ConfigError(f"InGraphSampler.batch_size={batch_size}; expected >= 1")
    if frame_unpacking not in FRAME_UNPACKING:
      raise ConfigError(f"InGraphSampler.frame_unpacking={frame_unpacking!r}; expected one of {FRAME_UNPACKING}")
    self.frame_unpacking = frame_unpacking
    self._replay = replay
    self.batch_size = int(batch_size)
    with tf.init_scope():
      self.rng = tf.random.Generator.from_seed(seed)

  def sample_ids(self) -> tf.Tensor:
    """[batch_size] int32 rows of the replay's transition tables, uniform over the valid ones."""
    return self.rng.uniform([self.batch_size], minval=0, maxval=self._replay.count, dtype=tf.int32)

  def sample(self) -> Dict[str, tf.Tensor]:
    return self._replay.gather(self.sample_ids(), self.frame_unpacking)

  def on_iteration_start(self, iteration: int) -> None:
    """Memory-bounded mode: swap in the iteration's checkpoints (same shapes: no retrace). Else a no-op."""
    self._replay.set_resident(int(iteration))


def make_tf_dataset(replay: "FixedReplay", batch_size: int, seed: int) -> tf.data.Dataset:
  """An endless `tf.data.Dataset` of batches (the contract), uniform over the valid transitions; reproducible.

  Ids come from `tf.data.Dataset.random(seed)`; the batch is gathered from the replay's storage in the input
  pipeline, so a training loop can prefetch batches while the accelerator trains. In memory-bounded mode a
  swap is seen by the next batches gathered (a prefetched batch may still come from the previous checkpoints).
  """
  def to_batch(random_ints):
    ids = tf.cast(random_ints % tf.cast(replay.count, tf.int64), tf.int32)
    return replay.gather(ids)

  return (tf.data.Dataset.random(seed=seed).batch(batch_size, drop_remainder=True)
          .map(to_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2))

