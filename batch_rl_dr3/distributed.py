"""The offline agent's gradient step under `tf.distribute`: TPU pods, several GPUs, or CPU replicas in tests.

The global batch is split across replicas; each replica samples its share in-graph from its own RNG stream
(a `tf.random.Generator` created under `strategy.scope()` gives every replica a different stream), computes the
loss scaled by the GLOBAL batch (`agent.compute_loss(..., global_batch_size=G)`: per-example terms summed and
divided by G), and the replicas' gradients are summed by one all-reduce, so the update is the single-device
update on the global batch. REM's random mixture is drawn once per step and shared by all replicas (replica 0's
draw is broadcast), as on one device.

    strategy = distributed.create_strategy("tpu")            # or "mirrored", "default"
    with strategy.scope():
      sampler = fixed_replay.InGraphSampler(replay, batch_size=G // strategy.num_replicas_in_sync, seed=seed)
      agent = create_agent("cql_qr", num_actions, sampler)
    step = distributed.DistributedTrainStep(strategy, agent, global_batch_size=G)
    metrics = step()                                         # one gradient step

Input paths: `step()` samples in-graph on each replica, which needs the replay's frames on the replicas'
devices (fine for CPU/GPU replicas; on TPU the frames would be copied into every core's memory, which holds the
1 % data but not 5 % / 10 %). `step_on_iterator(distribute_dataset(make_tf_dataset(replay, G, seed)))` instead
samples on the host in tf.data and streams each replica its share: the TPU input path. `step_on_batch` takes a
given global batch (tests, debugging).

Where this step differs from the single-device one (same global batch): nowhere for the per-example losses and
the DR3 penalty, mean- or sum-reduced (equal to float tolerance, see tests/test_distributed.py). The srank penalty is a
function of the whole feature matrix: each replica computes it on its own share, so with it on, the update
differs (the penalty is off in the paper's configs). Reported metrics are means over replicas, except
`total_loss`, which is the global loss (the sum of the replicas' shares).

Why the update is done here rather than by `agent.apply_gradients`: that method also counts the step in a
`tf.Variable` created without a cross-replica aggregation, which `tf.distribute` refuses to update in replica
context; so the replicas apply the all-reduced gradients through the agent's optimizer, and the step count and
the target sync run once, in cross-replica context, after them.

CPU replicas for tests: `configure_cpu_replicas(2)` before TensorFlow initializes its devices (in practice: in a
fresh process, before any op runs). On TPU VMs TensorFlow needs the TPU build (`tensorflow-tpu` /
`libtpu`, see launch/README.md); the CPU wheel of requirements.txt sees no TPU.
"""
from typing import Any, Dict, Optional

import gin
import numpy as np
import tensorflow as tf

from batch_rl_dr3 import atari_experiment
from batch_rl_dr3.agents import create_agent
from batch_rl_dr3.data import fixed_replay
from batch_rl_dr3.errors import ConfigError, first_line

STRATEGIES = ("default", "mirrored", "tpu")


def configure_cpu_replicas(num_replicas: int) -> None:
  """Splits the host CPU into `num_replicas` logical devices (/cpu:0 ... ), for MirroredStrategy tests.

  Raises:
    ConfigError: TensorFlow has already initialized its devices in this process.
  """
  cpu = tf.config.list_physical_devices("CPU")[0]
  try:
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * num_replicas)
  except RuntimeError as e:
    raise ConfigError(f"configure_cpu_replicas({num_replicas}): TensorFlow's devices are already initialized in "
                      f"this process; call it first thing in a fresh process ({e})") from None


@gin.configurable
def create_strategy(kind: str = "default", tpu: Optional[str] = None, num_cpu_replicas: Optional[int] = None
                    ) -> tf.distribute.Strategy:
  """A tf.distribute strategy.

  Args:
    kind: 'default' (one device, no distribution), 'mirrored' (every GPU; without GPUs, every logical CPU
      device), or 'tpu' (TPUStrategy).
    tpu: kind='tpu': a TPU name or grpc:// address; None tries this host's TPU ('local') then $TPU_NAME.
    num_cpu_replicas: kind='mirrored' without GPUs: split the CPU into this many logical devices first
      (must happen before TensorFlow initializes; see `configure_cpu_replicas`).
  """
  if kind not in STRATEGIES:
    raise ConfigError(f"create_strategy.kind={kind!r}; expected one of {STRATEGIES}")
  if kind == "default":
    return tf.distribute.get_strategy()
  if kind == "tpu":
    # None: the TPU attached to this host ('local', TPU VMs), else the one the environment names (TPU_NAME, as
    # on TPU-node hosts).
    errors = []
    for candidate in ([tpu] if tpu else ["local", None]):
      try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=candidate)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
      except (ValueError, RuntimeError, tf.errors.OpError) as e:
        errors.append(f"tpu={candidate!r}: {first_line(e)}")
    raise ConfigError(f"create_strategy.kind='tpu': no TPU found ({'; '.join(errors)}); on a TPU host install the "
                      "TPU build of TensorFlow (launch/README.md), or set create_strategy.tpu")
  if num_cpu_replicas:
    configure_cpu_replicas(num_cpu_replicas)
  gpus = tf.config.list_logical_devices("GPU")
  devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
  return tf.distribute.MirroredStrategy(devices)


def _apply_summed_gradients(optimizer, grads_and_vars) -> None:
  """Applies gradients already all-reduced across replicas (no second aggregation), in replica context, for
  both Keras optimizer generations (the legacy OptimizerV2 the agents use, and the newer one)."""
  if isinstance(optimizer, tf.keras.optimizers.legacy.Optimizer):
    optimizer.apply_gradients(grads_and_vars, experimental_aggregate_gradients=False)
  else:
    optimizer.apply_gradients(grads_and_vars, skip_gradients_aggregation=True)


def split_batch(strategy: tf.distribute.Strategy, global_batch: Dict[str, tf.Tensor]):
  """A global batch as per-replica values: replica i gets rows [i * b, (i + 1) * b) with b = G / replicas."""
  replicas = strategy.num_replicas_in_sync
  size = int(next(iter(global_batch.values())).shape[0])
  if size % replicas:
    raise ConfigError(f"global batch of {size} does not split evenly across {replicas} replicas")
  share = size // replicas
  arrays = {k: np.asarray(v) for k, v in global_batch.items()}

  def value_fn(context):
    start = context.replica_id_in_sync_group * share
    return {k: tf.constant(v[start:start + share]) for k, v in arrays.items()}

  return strategy.experimental_distribute_values_from_function(value_fn)


class DistributedTrainStep:
  """One gradient step of an `OfflineAgent` built under `strategy.scope()`, data-parallel over replicas."""

  def __init__(self, strategy: tf.distribute.Strategy, agent, global_batch_size: int):
    self.strategy = strategy
    if getattr(agent, "behavior_policy", None) is not None:
      raise ConfigError(f"{type(agent).__name__}.backup='behavior_policy' runs on one device only (pi_beta is "
                        f"cloned before the first step by agent.train_step); use AtariExperiment")
    self.agent = agent
    self.global_batch_size = int(global_batch_size)
    replicas = strategy.num_replicas_in_sync
    if self.global_batch_size % replicas:
      raise ConfigError(f"global batch size {global_batch_size} does not split evenly across {replicas} replicas")
    self.per_replica_batch_size = self.global_batch_size // replicas
    with strategy.scope():
      if not strategy.extended.variable_created_in_scope(agent.gradient_steps):
        raise ConfigError("the agent was not built under strategy.scope(): build it (and its sampler) there")
    sampler_batch = getattr(agent.sampler, "batch_size", None)
    if sampler_batch is not None and sampler_batch != self.per_replica_batch_size:
      raise ConfigError(f"the agent's sampler draws {sampler_batch} transitions per replica; with "
                        f"{replicas} replicas and a global batch of {global_batch_size} it must draw "
                        f"{self.per_replica_batch_size}")
    self._sampled_step = tf.function(self._sampled_step_fn)
    self._batch_step = tf.function(self._batch_step_fn)
    self._iterator_step = tf.function(self._iterator_step_fn)
    self._shared_head_weights = tf.function(
        lambda: self.strategy.run(self._draw_shared_head_weights))

  # ---- replica context -----------------------------------------------------------------------------------
  def _draw_shared_head_weights(self):
    """The mixture drawn by replica 0, seen by every replica (None for agents without one)."""
    weights = self.agent.draw_head_weights()
    if weights is None:
      return None
    context = tf.distribute.get_replica_context()
    is_first = tf.cast(tf.equal(context.replica_id_in_sync_group, 0), weights.dtype)
    return context.all_reduce(tf.distribute.ReduceOp.SUM, weights * is_first)

  def _replica_update(self, batch, head_weights):
    if head_weights is None:
      head_weights = self._draw_shared_head_weights()
    with tf.GradientTape() as tape:
      loss, metrics = self.agent.compute_loss(batch, head_weights, global_batch_size=self.global_batch_size)
    weights = self.agent.trainable_weights
    grads = tape.gradient(loss, weights)
    grads = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
    _apply_summed_gradients(self.agent.optimizer, list(zip(grads, weights)))
    return metrics

  def _replica_sampled_update(self):
    return self._replica_update(self.agent.sampler.sample(), None)

  # ---- cross-replica context --------------------------------------------------------------------------
  def _finish(self, per_replica_metrics) -> Dict[str, tf.Tensor]:
    self.agent.gradient_steps.assign_add(1)
    self.agent.maybe_sync_target()
    metrics = {}
    for name, value in per_replica_metrics.items():
      op = tf.distribute.ReduceOp.SUM if name == "total_loss" else tf.distribute.ReduceOp.MEAN
      metrics[name] = self.strategy.reduce(op, value, axis=None)
    return metrics

  def _sampled_step_fn(self):
    return self._finish(self.strategy.run(self._replica_sampled_update))

  def _batch_step_fn(self, distributed_batch, head_weights):
    return self._finish(self.strategy.run(self._replica_update, args=(distributed_batch, head_weights)))

  def _iterator_step_fn(self, iterator):
    return self._finish(self.strategy.run(self._replica_update, args=(next(iterator), None)))

  # ---- public -------------------------------------------------------------------------------------------
  def __call__(self) -> Dict[str, tf.Tensor]:
    """One step on batches the replicas sample in-graph (each from its own stream); returns the metrics."""
    return self._sampled_step()

  def step_on_batch(self, global_batch: Dict[str, np.ndarray], head_weights=None) -> Dict[str, tf.Tensor]:
    """One step on a given global batch (split across replicas by `split_batch`); REM's mixture may be given."""
    if head_weights is not None:
      head_weights = tf.constant(head_weights, tf.float32)
    return self._batch_step(split_batch(self.strategy, global_batch), head_weights)

  def distribute_dataset(self, dataset: tf.data.Dataset):
    """An iterator over a dataset of GLOBAL batches (e.g. `fixed_replay.make_tf_dataset(replay, G, seed)`),
    each split across the replicas by tf.distribute; feed it to `step_on_iterator`."""
    return iter(self.strategy.experimental_distribute_dataset(dataset))

  def step_on_iterator(self, iterator) -> Dict[str, tf.Tensor]:
    """One step on the next global batch of a `distribute_dataset` iterator (the host-side input path)."""
    return self._iterator_step(iterator)

  def shared_head_weights(self):
    """Per-replica values of the mixture one step would use (identical on every replica); for checks."""
    return self.strategy.experimental_local_results(self._shared_head_weights())

  def sample_per_replica(self):
    """What each replica's sampler draws next (a tuple of batches, one per replica); for checks."""
    return self.strategy.experimental_local_results(
        tf.function(lambda: self.strategy.run(self.agent.sampler.sample))())


@gin.configurable(denylist=["seed"])
class DistributedAtariExperiment(atari_experiment.AtariExperiment):
  """`AtariExperiment` whose gradient step is the data-parallel `DistributedTrainStep` of `create_strategy()`.

  Select it in gin (launch/gin/tpu.gin does this; the `import` line registers it):

      import batch_rl_dr3.distributed
      run_experiment.create_experiment = @DistributedAtariExperiment
      create_strategy.kind = 'tpu'

  Every `AtariExperiment.*` binding still applies; `AtariExperiment.batch_size` is the GLOBAL batch. The strategy
  is created first, before any TensorFlow op runs, so that `create_strategy.num_cpu_replicas` can still split
  the CPU. Evaluation and diagnostics run the same agent outside the replicas.
  """

  def __init__(self, seed: int = 0, host_input: Optional[bool] = None):
    """
    Args:
      seed: the run's seed.
      host_input: sample in tf.data on the host and stream each replica its share (the TPU input path) instead
        of sampling in-graph on each replica. Default: True on TPU, False otherwise.
    """
    self.strategy = create_strategy()
    super().__init__(seed=seed)
    replicas = self.strategy.num_replicas_in_sync
    global_batch = self.sampler.batch_size
    if global_batch % replicas:
      raise ConfigError(f"AtariExperiment.batch_size={global_batch} does not split across {replicas} replicas")
    num_actions = self.agent.num_actions
    del self.agent, self.sampler  # the single-device ones the parent built; rebuilt under the strategy
    with self.strategy.scope():
      self.sampler = fixed_replay.InGraphSampler(self.replay, batch_size=global_batch // replicas,
                                                 seed=atari_experiment.derived_seed(seed, "sampler"))
      self.agent = create_agent(self.agent_name, num_actions, self.sampler,
                                seed=atari_experiment.derived_seed(seed, "agent"))
    self.distributed_step = DistributedTrainStep(self.strategy, self.agent, global_batch)
    if host_input is None:
      host_input = isinstance(self.strategy, tf.distribute.TPUStrategy)
    self._host_input = bool(host_input)
    self._global_batch = global_batch
    self._input_iterator = None

  def on_iteration_start(self, iteration: int) -> None:
    super().on_iteration_start(iteration)
    if self._host_input:
      # A dataset per iteration, seeded by (seed, iteration): a resumed run draws the same batches (tf.data
      # iterators under tf.distribute cannot be checkpointed).
      dataset = fixed_replay.make_tf_dataset(
          self.replay, self._global_batch, atari_experiment.derived_seed(self.seed, f"host_input/{iteration}"))
      self._input_iterator = self.distributed_step.distribute_dataset(dataset)

  def train_step(self):
    if self._host_input:
      return self.distributed_step.step_on_iterator(self._input_iterator)
    return self.distributed_step()

  def run_info(self) -> Dict[str, Any]:
    return dict(super().run_info(), strategy=type(self.strategy).__name__,
                replicas=self.strategy.num_replicas_in_sync, host_input=self._host_input)
