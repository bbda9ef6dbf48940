"""RLDS episodes -> (s, a, r, s', discount) transitions on tf.data, and transitions -> in-memory arrays.

RLDS (the format of TFDS's `d4rl_*` datasets and of our raw-hdf5 / COG converters) stores an episode as a
sequence of steps; step t holds (observation_t, action_t, reward_t, discount_t, is_first, is_last,
is_terminal), reward_t being the reward *for* action_t. A transition pairs step t with step t+1:

  observation = obs_t, action = a_t, reward = r_t, next_observation = obs_{t+1},
  discount = 1 - is_terminal_{t+1}    (bootstrapping stops only at a true terminal),
  next_action = a_{t+1}               (the padding action at a terminal or a recorded time-out)

`is_terminal` (the environment ended: no bootstrap) is kept apart from `is_last` (the episode was cut, e.g.
by a time limit: bootstrap continues). The last step of a timed-out episode recorded without a next observation
has no step t+1, so it yields no transition (TFDS's generate_examples semantics). `keep_truncation_transitions=False`
also drops the transition into the observation-only final step of a truncated episode (D4RL's rule, `data/d4rl.py`). The `rlds` package would do
the windowing, but it imports dm-reverb at top level, which does not install here; `window_batch` is the same
size/shift windowing (`rlds.transformations.batch(steps, size, shift, drop_remainder=True)`).
"""
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from batch_rl_dr3.errors import DataError

STEP_KEYS = ("observation", "action", "reward", "discount", "is_first", "is_last", "is_terminal")
TRANSITION_KEYS = ("observation", "action", "reward", "next_observation", "discount")
# Also produced by every loader here; optional for the replay (ReBRAC's critic BC term and DR3 with the dataset's
# a' use it). At a terminal it is the padding action of the last step (multiplied by discount 0 in every use).
OPTIONAL_TRANSITION_KEYS = ("next_action",)


def window_batch(steps: tf.data.Dataset, size: int, shift: int = 1) -> tf.data.Dataset:
  """Overlapping windows of `size` consecutive elements, `shift` apart, each batched (incomplete ones dropped).

  Works on nested elements (dicts of tensors): every leaf gets a leading axis of length `size`.
  """
  if size < 1 or shift < 1:
    raise ValueError(f"window_batch: size={size}, shift={shift}; both must be >= 1")

  def batch_window(window):
    return tf.data.Dataset.zip(tf.nest.map_structure(lambda d: d.batch(size, drop_remainder=True), window))

  return steps.window(size, shift=shift, drop_remainder=True).flat_map(batch_window)


def consecutive_pairs(steps: tf.data.Dataset) -> tf.data.Dataset:
  """`window_batch(steps, 2, 1)` by zipping the steps with themselves shifted by one: the same windows, without
  a nested dataset per window (several times faster on long episodes)."""
  return tf.data.Dataset.zip((steps, steps.skip(1))).map(
      lambda first, second: tf.nest.map_structure(lambda a, b: tf.stack([a, b]), first, second))


def _pair_to_transition(pair):
  """A size-2 window of steps -> one transition dict (see the module docstring)."""
  is_terminal_next = tf.cast(pair["is_terminal"][1], tf.float32)
  return {
      "observation": tf.nest.map_structure(lambda x: x[0], pair["observation"]),
      "action": pair["action"][0],
      "reward": tf.cast(pair["reward"][0], tf.float32),
      "next_observation": tf.nest.map_structure(lambda x: x[1], pair["observation"]),
      "discount": 1.0 - is_terminal_next,
      "next_action": pair["action"][1],
  }


def _into_truncation_step(pair) -> tf.Tensor:
  """True when the pair's second step is an observation-only final step of a *truncated* episode.

  TFDS's `d4rl/dataset_utils.generate_examples` appends such a step (is_last, not is_terminal, discount 0) to
  every time-out episode of a file that has next_observations; the last real row of a time-out episode recorded
  without them is is_last with discount 1 and stays.
  """
  second_is_appended = tf.logical_and(pair["is_last"][1], tf.equal(pair["discount"][1], 0.0))
  return tf.logical_and(second_is_appended, tf.logical_not(pair["is_terminal"][1]))


def episode_to_transitions(episode, keep_truncation_transitions: bool = True) -> tf.data.Dataset:
  """One RLDS episode (a dict with a `steps` dataset) -> its transitions (size-2 windows, shift 1).

  keep_truncation_transitions=False drops the transition into the observation-only final step of a truncated
  (timed-out) episode, as D4RL's `qlearning_dataset` drops every time-out row (see `data/d4rl.py`).
  """
  steps = episode["steps"]
  keep = ("observation", "action", "reward", "discount", "is_last", "is_terminal")
  steps = steps.map(lambda step: {k: step[k] for k in keep})
  pairs = consecutive_pairs(steps)
  if not keep_truncation_transitions:
    pairs = pairs.filter(lambda pair: tf.logical_not(_into_truncation_step(pair)))
  return pairs.map(_pair_to_transition)


def episodes_to_transitions(episodes: tf.data.Dataset, keep_truncation_transitions: bool = True
                            ) -> tf.data.Dataset:
  """An RLDS episode dataset -> the transitions of all its episodes, in order (see `episode_to_transitions`)."""
  return episodes.flat_map(lambda episode: episode_to_transitions(episode, keep_truncation_transitions))


def transitions_to_arrays(transitions: tf.data.Dataset, source: str,
                          max_transitions: Optional[int] = None) -> Dict[str, np.ndarray]:
  """Collects a transition dataset into numpy arrays (float32 observations/actions unless uint8 images).

  `source` names the dataset in error messages. Raises DataError when it is empty or holds NaN/inf.
  """
  if max_transitions is not None:
    transitions = transitions.take(max_transitions)
  keys = [k for k in TRANSITION_KEYS + OPTIONAL_TRANSITION_KEYS if k in transitions.element_spec]
  columns = {k: [] for k in keys}
  for batch in transitions.batch(4096).as_numpy_iterator():
    for k in keys:
      columns[k].append(batch[k])
  if not columns["reward"]:
    raise DataError(f"{source}: no transitions (every episode has fewer than 2 steps, or the split is empty)")
  arrays = {k: np.concatenate(v, axis=0) for k, v in columns.items()}
  return normalise_dtypes(arrays, source)


def normalise_dtypes(arrays: Dict[str, np.ndarray], source: str) -> Dict[str, np.ndarray]:
  """float32 observations / actions / rewards (uint8 images kept); DataError naming `source` on NaN or inf."""
  out = {}
  for k, v in arrays.items():
    if v.dtype == np.uint8:
      out[k] = v
      continue
    v = v.astype(np.float32)
    if not np.all(np.isfinite(v)):
      bad = int(np.argmax(~np.isfinite(v).reshape(len(v), -1).all(axis=1)))
      raise DataError(f"{source}: '{k}' holds NaN or inf (first at transition {bad}); expected finite values")
    out[k] = v
  return out


def numpy_episodes_to_transitions(episodes: List[Dict[str, np.ndarray]], source: str) -> Dict[str, np.ndarray]:
  """Episodes held as dicts of step arrays (keys STEP_KEYS) -> transition arrays, through the same windowing."""
  if not episodes:
    raise DataError(f"{source}: no episodes")
  first = episodes[0]
  signature = {k: tf.TensorSpec([None] + list(np.shape(first[k])[1:]), tf.as_dtype(np.asarray(first[k]).dtype))
               for k in STEP_KEYS}
  episode_ds = tf.data.Dataset.from_generator(lambda: iter(episodes), output_signature=signature)
  episode_ds = episode_ds.map(lambda steps: {"steps": tf.data.Dataset.from_tensor_slices(steps)})
  return transitions_to_arrays(episodes_to_transitions(episode_ds), source)


def rlds_features(obs_shape, obs_dtype, action_shape, action_dtype) -> tfds.features.FeaturesDict:
  """The TFDS feature spec of an RLDS episode dataset (the `steps` of TFDS's d4rl builders, without infos)."""
  return tfds.features.FeaturesDict({
      "steps": tfds.features.Dataset({
          "observation": tfds.features.Tensor(shape=obs_shape, dtype=obs_dtype),
          "action": tfds.features.Tensor(shape=action_shape, dtype=action_dtype),
          "reward": np.float32,
          "discount": np.float32,
          "is_first": np.bool_,
          "is_last": np.bool_,
          "is_terminal": np.bool_,
      }),
  })
