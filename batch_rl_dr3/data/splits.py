"""The held-out validation split of the actor-regularization study (Tarasov et al. 2024, reference §5.3).

A fraction of whole *episodes* (5 % in the study) is set aside before training: the replay never holds them, so
training never sees them, and the actor diagnostics are computed on them. `hold_out_episodes` returns the training
and validation transition arrays and a JSON-able description for run_info.json.

Episodes come from the loader's `episode` column when it has one (Minari), else from the transitions themselves:
a new episode starts after a transition with discount 0 (a terminal) or where the next transition's s is not this
transition's s' (a time-out, or D4RL's placeholder s' after a terminal). That rule reads every loader's output
(D4RL hdf5 / TFDS / RLDS, COG) without them having to carry episode ids.

Selection: 'random' (default) draws the validation episodes with `numpy.random.default_rng(seed)`; 'last' takes the
last episodes in dataset order, as ActoReg's `det_validation` does (it cuts by transition index, so its boundary is
not episode-aligned; ours is).
"""
import math
from typing import Any, Dict, Tuple

import numpy as np

from batch_rl_dr3.errors import ConfigError

SELECTIONS = ("random", "last")
_CHUNK = 65536


def episode_ids(arrays: Dict[str, np.ndarray]) -> np.ndarray:
  """int64 episode index of every transition (the `episode` column, or the continuity rule of the docstring)."""
  if "episode" in arrays:
    return np.asarray(arrays["episode"], np.int64)
  n = len(arrays["reward"])
  observation = np.asarray(arrays["observation"]).reshape(n, -1)
  next_observation = np.asarray(arrays["next_observation"]).reshape(n, -1)
  starts = np.zeros(n, bool)
  starts[1:] = np.asarray(arrays["discount"])[:-1] == 0.0
  for begin in range(0, n - 1, _CHUNK):  # in chunks: image rows would make an N x pixels temporary
    end = min(begin + _CHUNK, n - 1)
    starts[begin + 1:end + 1] |= np.any(next_observation[begin:end] != observation[begin + 1:end + 1], axis=1)
  return np.cumsum(starts).astype(np.int64)


def hold_out_episodes(arrays: Dict[str, np.ndarray], fraction: float, seed: int, selection: str = "random"
                      ) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray], Dict[str, Any]]:
  """(training arrays, validation arrays, description): ceil(fraction * episodes) whole episodes held out.

  Both keep dataset order. With fraction 0 the validation arrays are empty and training keeps everything.
  """
  if not 0.0 <= fraction < 1.0:
    raise ConfigError(f"ContinuousExperiment.validation_fraction={fraction}; expected 0 <= fraction < 1")
  if selection not in SELECTIONS:
    raise ConfigError(f"ContinuousExperiment.validation_selection={selection!r}; expected one of {SELECTIONS}")
  if fraction == 0.0:
    empty = {k: v[:0] for k, v in arrays.items()}
    return arrays, empty, {"fraction": 0.0, "validation_transitions": 0}
  ids = episode_ids(arrays)
  unique = np.unique(ids)
  count = math.ceil(fraction * len(unique)) if fraction > 0 else 0
  if count >= len(unique):
    raise ConfigError(f"ContinuousExperiment.validation_fraction={fraction} holds out all {len(unique)} episodes "
                      f"of the dataset; expected a smaller fraction or more episodes")
  if selection == "last":
    held = unique[len(unique) - count:]
  else:
    held = np.sort(np.random.default_rng(seed).choice(unique, size=count, replace=False))
  is_validation = np.isin(ids, held)
  train = {k: v[~is_validation] for k, v in arrays.items()}
  validation = {k: v[is_validation] for k, v in arrays.items()}
  info = {"fraction": fraction, "selection": selection, "seed": seed, "episodes": int(len(unique)),
          "validation_episodes": [int(i) for i in held], "validation_transitions": int(is_validation.sum()),
          "train_transitions": int((~is_validation).sum())}
  return train, validation, info
