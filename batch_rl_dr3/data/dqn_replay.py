"""Read and write DQN Replay checkpoints (Dopamine `OutOfGraphReplayBuffer` files) and pick dataset subsets.

A checkpoint with suffix ``i`` is six gzip-compressed ``.npy`` files in one folder (``replay_logs``)::

    $store$_observation_ckpt.i.gz  (N, 84, 84) uint8     add_count_ckpt.i.gz      0-d int64
    $store$_action_ckpt.i.gz       (N,) int32            invalid_range_ckpt.i.gz  (stack + n,) int
    $store$_reward_ckpt.i.gz       (N,) float32
    $store$_terminal_ckpt.i.gz     (N,) uint8

Newer Dopamine also writes ``episode_end_indices_ckpt.i.gz`` (a pickled set); the DQN Replay dataset does not
have it, we neither need nor read it (it is a pickle), and a checkpoint is complete with the six files above.
Every path goes through ``tf.io.gfile`` (local, ``file://``, ``gs://`` ...).

Dataset settings (the DR3 / CQL / Dopamine offline-lab convention, data % = transitions kept per checkpoint
/ 1M; each logged checkpoint holds ``checkpoint_capacity`` = 1,000,000 stored transitions):

=============  =================================  ====================================================
setting        checkpoints (suffixes)             transitions kept per checkpoint
=============  =================================  ====================================================
``1pct``       0..49                              the first 10,000 stored rows (1 % of 1M)
``5pct``       0..49                              the first 50,000 stored rows (5 % of 1M)
``first10pct`` 0..4 (the first 5M transitions)    all rows
``all``        every complete checkpoint found    all rows
explicit       ``suffixes=[...]``                 ``transitions_per_checkpoint`` (None = all rows)
=============  =================================  ====================================================

"First rows" means a *prefix of the stored arrays* (what a Dopamine buffer with ``replay_capacity`` = 10,000
sees after batch_rl / Dopamine-labs truncate the loaded arrays), not i.i.d. subsampling. The alternative of
d3rlpy (``subset='episodes'``: random whole episodes of each checkpoint, seeded, up to the same transition
budget) is offered by `fixed_replay.load_dataset`.
"""
import gzip
import io
import os
import re
import uuid
import zlib
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from batch_rl_dr3.errors import ConfigError, DataError

STORE_PREFIX = "$store$_"
STORE_NAMES = ("observation", "action", "reward", "terminal")
OTHER_NAMES = ("add_count", "invalid_range")
ARRAY_NAMES = STORE_NAMES + OTHER_NAMES
FILE_NAMES = tuple(STORE_PREFIX + n for n in STORE_NAMES) + OTHER_NAMES
OBSERVATION_SHAPE = (84, 84)
CHECKPOINT_CAPACITY = 1_000_000

_FILE_RE = re.compile(r"^(?P<name>.+)_ckpt\.(?P<suffix>\d+)\.gz$")

# name -> (expected dtype after loading, dtype kinds accepted in a file, per-row shape)
_STORE_SPECS = {
    "observation": (np.uint8, "u", OBSERVATION_SHAPE),
    "action": (np.int32, "iu", ()),
    "reward": (np.float32, "f", ()),
    "terminal": (np.uint8, "biu", ()),
}

# Settings as (suffixes, fraction of checkpoint_capacity kept per checkpoint); None = every checkpoint / all rows.
SETTINGS = {
    "1pct": (tuple(range(50)), 0.01),
    "5pct": (tuple(range(50)), 0.05),
    "first10pct": (tuple(range(5)), None),
    "all": (None, None),
}


def checkpoint_path(directory: str, name: str, suffix: int) -> str:
  """The file of array `name` ('observation', 'add_count', ...) of checkpoint `suffix`, as Dopamine names it."""
  file_name = STORE_PREFIX + name if name in STORE_NAMES else name
  return os.path.join(directory, f"{file_name}_ckpt.{int(suffix)}.gz")


def replay_logs_dir(data_root: str, game: str, run: int) -> str:
  """`<root>/<Game>/<run>/replay_logs`, the layout of gs://atari-replay-datasets/dqn."""
  return os.path.join(data_root, game, str(int(run)), "replay_logs")


def invalid_range(cursor: int, capacity: int, stack_size: int, update_horizon: int) -> np.ndarray:
  """Indices whose transition straddles the cursor, as Dopamine's `circular_replay_buffer.invalid_range`."""
  if not 0 <= cursor < capacity:
    raise ValueError(f"cursor {cursor} must be in [0, {capacity})")
  return np.array([(cursor - update_horizon + i) % capacity for i in range(stack_size + update_horizon)])


# ----------------------------------------------------------------------------------------------------------
# Folder listing


def _list_folder(directory: str) -> List[str]:
  if not tf.io.gfile.isdir(directory):
    raise DataError(f"replay folder {directory} does not exist (expected a DQN Replay 'replay_logs' folder "
                    f"with files like $store$_observation_ckpt.0.gz)")
  return sorted(tf.io.gfile.listdir(directory))


def list_checkpoints(directory: str) -> List[int]:
  """Sorted suffixes of the complete checkpoints (all six files present) in `directory`; other files ignored."""
  found: Dict[int, set] = {}
  for name in _list_folder(directory):
    match = _FILE_RE.match(name.rstrip("/"))
    if match and match.group("name") in FILE_NAMES:
      found.setdefault(int(match.group("suffix")), set()).add(match.group("name"))
  return sorted(s for s, names in found.items() if len(names) == len(FILE_NAMES))


def _describe_folder(directory: str, limit: int = 12) -> str:
  names = _list_folder(directory)
  shown = ", ".join(names[:limit]) + (f", ... ({len(names)} files)" if len(names) > limit else "")
  return shown or "nothing"


def require_checkpoints(directory: str) -> List[int]:
  """`list_checkpoints`, but a folder without any complete checkpoint is a DataError listing what is there."""
  suffixes = list_checkpoints(directory)
  if not suffixes:
    raise DataError(f"replay folder {directory} has no complete checkpoint (each needs the 6 files "
                    f"{', '.join(f + '_ckpt.<i>.gz' for f in FILE_NAMES)}); found: {_describe_folder(directory)}")
  return suffixes


# ----------------------------------------------------------------------------------------------------------
# Reading: gzip-compressed .npy, streamed


class _NpyStream:
  """An open gzip .npy file positioned after its header; reads rows without holding the whole array."""

  def __init__(self, path: str):
    self.path = path
    if not tf.io.gfile.exists(path):
      raise DataError(f"missing file {path} (every checkpoint needs its 6 files)")
    self._raw = tf.io.gfile.GFile(path, "rb")
    # Large reads from the underlying file: gzip asks for small chunks otherwise.
    self._gz = gzip.GzipFile(fileobj=io.BufferedReader(_GFileRaw(self._raw), 1 << 20), mode="rb")
    try:
      version = np.lib.format.read_magic(self._gz)
      if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(self._gz)
      else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(self._gz)
    except Exception as e:  # noqa: BLE001  (gzip, zlib and numpy each raise their own types)
      self.close()
      raise _format_error(path, e) from None
    if fortran:
      self.close()
      raise DataError(f"{path}: Fortran-ordered array; expected a C-ordered .npy as Dopamine writes")
    if dtype.hasobject:
      self.close()
      raise DataError(f"{path}: object array (pickle); expected a numeric .npy")
    self.shape, self.dtype = tuple(shape), dtype
    self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * dtype.itemsize

  def read_rows(self, out: np.ndarray) -> None:
    """Fills `out` (C-contiguous, this file's dtype) with the next rows of the array."""
    view = memoryview(out.reshape(-1).view(np.uint8))
    filled = 0
    try:
      while filled < len(view):
        got = self._gz.readinto(view[filled:])
        if not got:
          raise DataError(f"{self.path} is truncated: the array {self.shape} {self.dtype} ends early")
        filled += got
    except DataError:
      raise
    except Exception as e:  # noqa: BLE001
      raise _format_error(self.path, e) from None

  def check_end(self) -> None:
    """Reads to the end of the gzip stream so that its CRC and length are verified."""
    try:
      if self._gz.read(1):
        raise DataError(f"{self.path}: extra bytes after the array {self.shape} {self.dtype}")
    except DataError:
      raise
    except Exception as e:  # noqa: BLE001
      raise _format_error(self.path, e) from None

  def close(self) -> None:
    self._gz.close()
    self._raw.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


class _GFileRaw(io.RawIOBase):
  """A tf.io.gfile.GFile seen as a raw stream, so io.BufferedReader can batch gzip's small reads."""

  def __init__(self, gfile):
    self._f = gfile

  def readable(self):
    return True

  def readinto(self, buffer):
    data = self._f.read(len(buffer))
    buffer[:len(data)] = data
    return len(data)


def _format_error(path: str, error: Exception) -> DataError:
  if isinstance(error, EOFError):
    return DataError(f"{path} is truncated (the gzip stream ends early)")
  if isinstance(error, (gzip.BadGzipFile, zlib.error)):
    return DataError(f"{path} is not a valid gzip file ({error})")
  if isinstance(error, ValueError):
    return DataError(f"{path} is not a gzip-compressed .npy file ({error})")
  return DataError(f"{path} could not be read ({type(error).__name__}: {error})")


def _check_store_header(stream: _NpyStream, name: str) -> None:
  _, kinds, row_shape = _STORE_SPECS[name]
  if len(stream.shape) != 1 + len(row_shape) or tuple(stream.shape[1:]) != row_shape:
    raise DataError(f"{stream.path}: {name} has shape {stream.shape}; expected (N{''.join(', %d' % d for d in row_shape)})")
  if stream.dtype.kind not in kinds or (name == "observation" and stream.dtype != np.uint8):
    expected = np.dtype(_STORE_SPECS[name][0]).name
    raise DataError(f"{stream.path}: {name} has dtype {stream.dtype}; expected {expected}")


def _read_array(path: str, max_rows: Optional[int] = None, store_name: Optional[str] = None) -> Tuple[np.ndarray, int]:
  """(the first `max_rows` rows, or all, of the array in `path`; its full length)."""
  with _NpyStream(path) as stream:
    if store_name is not None:
      _check_store_header(stream, store_name)
    rows_total = stream.shape[0] if stream.shape else 1
    rows = rows_total if max_rows is None else min(max_rows, rows_total)
    out = np.empty((rows,) + stream.shape[1:] if stream.shape else (), stream.dtype)
    stream.read_rows(out)
    if rows == rows_total:
      stream.check_end()
  return out, rows_total


def read_num_rows(directory: str, suffix: int) -> int:
  """Stored rows N of a checkpoint, from the observation file's .npy header (decompresses a few bytes only)."""
  with _NpyStream(checkpoint_path(directory, "observation", suffix)) as stream:
    _check_store_header(stream, "observation")
    return stream.shape[0]


def _check_all_files(directory: str, suffix: int) -> None:
  if not tf.io.gfile.isdir(directory):
    _list_folder(directory)  # raises the folder message
  missing = [checkpoint_path(directory, n, suffix) for n in ARRAY_NAMES
             if not tf.io.gfile.exists(checkpoint_path(directory, n, suffix))]
  if missing:
    raise DataError(f"checkpoint {suffix} in {directory} is incomplete: missing file {missing[0]}"
                    + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                    + f"; complete checkpoints there: {list_checkpoints(directory) or 'none'}")


def load_small_arrays(directory: str, suffix: int, max_transitions: Optional[int] = None) -> Dict[str, np.ndarray]:
  """Everything of a checkpoint but the observations (prefix of `max_transitions` rows), plus 'num_rows' N.

  Store arrays come back as int32 action, float32 reward, uint8 terminal (Dopamine's dtypes).
  """
  _check_all_files(directory, suffix)
  num_rows = read_num_rows(directory, suffix)
  arrays: Dict[str, np.ndarray] = {}
  for name in ("action", "reward", "terminal"):
    array, total = _read_array(checkpoint_path(directory, name, suffix), max_transitions, store_name=name)
    if total != num_rows:
      raise DataError(f"{checkpoint_path(directory, name, suffix)} has {total} rows but the observation file "
                      f"has {num_rows}; the arrays of a checkpoint must have equal length")
    arrays[name] = array.astype(_STORE_SPECS[name][0], copy=False)
  add_count, _ = _read_array(checkpoint_path(directory, "add_count", suffix))
  if add_count.shape != () or add_count.dtype.kind not in "iu":
    raise DataError(f"{checkpoint_path(directory, 'add_count', suffix)}: expected a 0-d integer array, got "
                    f"shape {add_count.shape} dtype {add_count.dtype}")
  # Rows a not-full buffer never wrote hold whatever Dopamine's np.empty left there (NaN included) and are never
  # part of a transition: only written rows must be finite.
  written = num_rows if int(add_count) >= num_rows else max(int(add_count), 0)
  bad = np.flatnonzero(~np.isfinite(arrays["reward"][:written]))
  if len(bad):
    raise DataError(f"{checkpoint_path(directory, 'reward', suffix)}: {len(bad)} reward(s) are NaN or inf (first "
                    f"at row {bad[0]}); expected finite rewards")
  invalid, _ = _read_array(checkpoint_path(directory, "invalid_range", suffix))
  if invalid.ndim != 1 or invalid.dtype.kind not in "iuf":
    raise DataError(f"{checkpoint_path(directory, 'invalid_range', suffix)}: expected a 1-d integer array, got "
                    f"shape {invalid.shape} dtype {invalid.dtype}")
  arrays["add_count"] = add_count.astype(np.int64)
  arrays["invalid_range"] = invalid.astype(np.int64)
  arrays["num_rows"] = np.array(num_rows, np.int64)
  return arrays


def iter_observation_chunks(directory: str, suffix: int, num_rows: Optional[int] = None,
                            chunk_rows: int = 8192) -> Iterator[np.ndarray]:
  """Yields the first `num_rows` (all if None) observation rows in chunks, never holding more than a chunk."""
  path = checkpoint_path(directory, "observation", suffix)
  with _NpyStream(path) as stream:
    _check_store_header(stream, "observation")
    total = stream.shape[0]
    rows = total if num_rows is None else min(num_rows, total)
    done = 0
    while done < rows:
      chunk = np.empty((min(chunk_rows, rows - done),) + OBSERVATION_SHAPE, np.uint8)
      stream.read_rows(chunk)
      done += len(chunk)
      yield chunk
    if rows == total:
      stream.check_end()


def load_checkpoint(directory: str, suffix: int, *, max_transitions: Optional[int] = None) -> Dict[str, np.ndarray]:
  """The six arrays of checkpoint `suffix`, named as in the files (without the `$store$_` prefix).

  With `max_transitions`, the four store arrays are only their first rows, read by streaming the gzip files
  (a 1M checkpoint is 7 GB of frames; keeping 10k never decompresses more than needed).
  """
  small = load_small_arrays(directory, suffix, max_transitions)
  rows = len(small["action"])
  observation = np.empty((rows,) + OBSERVATION_SHAPE, np.uint8)
  done = 0
  for chunk in iter_observation_chunks(directory, suffix, rows):
    observation[done:done + len(chunk)] = chunk
    done += len(chunk)
  return {"observation": observation, "action": small["action"], "reward": small["reward"],
          "terminal": small["terminal"], "add_count": small["add_count"], "invalid_range": small["invalid_range"]}


# ----------------------------------------------------------------------------------------------------------
# Writing


def _validate_for_save(arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  missing = [n for n in ARRAY_NAMES if n not in arrays]
  if missing:
    raise DataError(f"save_checkpoint: arrays lack {missing}; expected the keys {list(ARRAY_NAMES)}")
  out = {}
  length = None
  for name in STORE_NAMES:
    array = np.asarray(arrays[name])
    dtype, kinds, row_shape = _STORE_SPECS[name]
    if array.ndim != 1 + len(row_shape) or tuple(array.shape[1:]) != row_shape:
      raise DataError(f"save_checkpoint: {name} has shape {array.shape}; expected (N{''.join(', %d' % d for d in row_shape)})")
    if array.dtype.kind not in kinds or (name == "observation" and array.dtype != np.uint8):
      raise DataError(f"save_checkpoint: {name} has dtype {array.dtype}; expected {np.dtype(dtype).name}")
    if length is not None and len(array) != length:
      raise DataError(f"save_checkpoint: {name} has {len(array)} rows, observation has {length}; "
                      f"the store arrays must have equal length")
    length = len(array) if length is None else length
    out[name] = np.ascontiguousarray(array, dtype=dtype)
  out["add_count"] = np.array(int(np.asarray(arrays["add_count"])), np.int64)
  out["invalid_range"] = np.asarray(arrays["invalid_range"]).astype(np.int64).reshape(-1)
  return out


def _write_gz_npy(path: str, array: np.ndarray) -> None:
  # Local filesystems get temp file + rename (a reader never sees half a file); object stores make a
  # single upload atomic by themselves, and rename there is a copy.
  atomic = "://" not in path or path.startswith("file://")
  target = f"{path}.tmp-{uuid.uuid4().hex}" if atomic else path
  try:
    with tf.io.gfile.GFile(target, "wb") as f:
      with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
        np.save(gz, array, allow_pickle=False)
    if atomic:
      tf.io.gfile.rename(target, path, overwrite=True)
  except BaseException:
    if atomic and tf.io.gfile.exists(target):
      tf.io.gfile.remove(target)
    raise


def save_checkpoint(directory: str, suffix: int, arrays: Dict[str, np.ndarray]) -> None:
  """Writes the six files of checkpoint `suffix` exactly as Dopamine's `OutOfGraphReplayBuffer.save` would.

  `arrays` has the keys of `load_checkpoint`. Creates `directory` if needed (Dopamine's save silently does
  nothing then). Each file is written atomically on local filesystems.
  """
  checked = _validate_for_save(arrays)
  tf.io.gfile.makedirs(directory)
  for name in ARRAY_NAMES:
    _write_gz_npy(checkpoint_path(directory, name, suffix), checked[name])


def checkpoint_signature(directory: str, suffix: int) -> List[Tuple[str, int, int]]:
  """(file name, size, mtime in ns) of the six files: changes whenever a checkpoint is rewritten."""
  signature = []
  for name in ARRAY_NAMES:
    path = checkpoint_path(directory, name, suffix)
    try:
      stat = tf.io.gfile.stat(path)
    except tf.errors.NotFoundError:
      raise DataError(f"missing file {path} (every checkpoint needs its 6 files)") from None
    signature.append((os.path.basename(path), int(stat.length), int(stat.mtime_nsec)))
  return signature


# ----------------------------------------------------------------------------------------------------------
# Dataset selection


def select_checkpoints(setting: Optional[str], available_suffixes: Sequence[int], *,
                       suffixes: Optional[Sequence[int]] = None,
                       transitions_per_checkpoint: Optional[int] = None,
                       checkpoint_capacity: int = CHECKPOINT_CAPACITY,
                       allow_fewer: bool = False) -> List[Tuple[int, Optional[int]]]:
  """The (suffix, transitions kept or None for all) pairs that a setting names, in suffix order.

  Args:
    setting: one of `SETTINGS` ('1pct', '5pct', 'first10pct', 'all'), or None / 'explicit' with `suffixes`.
    available_suffixes: the complete checkpoints found (`list_checkpoints`).
    suffixes: an explicit checkpoint list (overrides the setting's list).
    transitions_per_checkpoint: overrides the setting's per-checkpoint count (None keeps it).
    checkpoint_capacity: stored rows of one logged checkpoint (1M in the DQN Replay data); the percentages
      are of it, so a small stand-in capacity scales the settings down (tests, quickstart).
    allow_fewer: when the data lacks checkpoints that the setting asks for, use those present (and the caller
      logs it) instead of failing. Off by default: a "1pct" run on 3 checkpoints is not the paper's 1 %.
  """
  available = sorted(int(s) for s in available_suffixes)
  if suffixes is not None:
    wanted, count = [int(s) for s in suffixes], transitions_per_checkpoint
    what = f"suffixes={list(wanted)}"
    if not wanted:
      raise ConfigError("load_dataset.suffixes is empty; expected a list of checkpoint suffixes")
  else:
    if setting not in SETTINGS:
      raise ConfigError(f"load_dataset.setting={setting!r} is unknown; expected one of {sorted(SETTINGS)} "
                        f"or an explicit suffixes=[...] list")
    listed, fraction = SETTINGS[setting]
    wanted = available if listed is None else list(listed)
    count = int(round(fraction * checkpoint_capacity)) if fraction is not None else None
    if transitions_per_checkpoint is not None:
      count = transitions_per_checkpoint
    what = f"setting {setting!r}"
  if count is not None and count <= 0:
    raise ConfigError(f"load_dataset.transitions_per_checkpoint={count}; expected a positive count or None")
  missing = [s for s in wanted if s not in available]
  if missing:
    present = [s for s in wanted if s in available]
    if not allow_fewer or not present:
      raise DataError(f"{what} needs checkpoints {format_suffixes(missing)} which are not in the data (complete "
                      f"checkpoints found: {format_suffixes(available) or 'none'}); pass allow_fewer=True to use the "
                      f"ones present")
    wanted = present
  return [(s, count) for s in sorted(set(wanted))]


def format_suffixes(values: Sequence[int]) -> str:
  """[0,1,2,5] -> '0-2, 5' for short error messages."""
  values = sorted(values)
  parts, start = [], None
  for i, v in enumerate(values):
    if start is None:
      start = v
    if i + 1 == len(values) or values[i + 1] != v + 1:
      parts.append(str(start) if start == v else f"{start}-{v}")
      start = None
  return ", ".join(parts)
