"""A local uncompressed cache of DQN Replay checkpoint slices, so the second load memory-maps instead of gunzips.

An entry is a folder ``<cache_dir>/<key>/`` with one ``.npy`` per array (observation, action, reward,
terminal, add_count, invalid_range) and ``meta.json`` written last. The key hashes the source folder, the
suffix and the slice (rows kept, subset); ``meta.json`` records the source files' sizes and mtimes, and an
entry whose source changed since is rewritten. Entries are built in a temporary folder and renamed into place,
so a killed load or a concurrent reader never sees half an entry.
"""
import hashlib
import json
import mmap
import os
import shutil
import uuid
from typing import Dict, Iterable, Optional

import numpy as np

from batch_rl_dr3.data import dqn_replay
from batch_rl_dr3.errors import DataError

_SMALL = ("action", "reward", "terminal", "add_count", "invalid_range")
_META = "meta.json"


def _advise_sequential(array: np.ndarray) -> None:
  """Asks the kernel to read the mapped frames ahead: they are copied once, front to back."""
  mapping = getattr(array, "_mmap", None)
  for advice in ("MADV_WILLNEED", "MADV_SEQUENTIAL"):
    if mapping is not None and hasattr(mmap, advice):
      try:
        mapping.madvise(getattr(mmap, advice))
      except (OSError, ValueError):
        pass


def _source_id(directory: str) -> str:
  return directory if "://" in directory else os.path.abspath(directory)


class ReplayCache:
  """Cache of checkpoint slices under `cache_dir` (a local folder)."""

  def __init__(self, cache_dir: str):
    self.cache_dir = os.path.abspath(os.path.expanduser(cache_dir))
    os.makedirs(self.cache_dir, exist_ok=True)

  def entry_dir(self, directory: str, suffix: int, slice_spec: str) -> str:
    key = hashlib.sha256(f"{_source_id(directory)}|{int(suffix)}|{slice_spec}".encode()).hexdigest()[:24]
    return os.path.join(self.cache_dir, f"ckpt{int(suffix)}-{key}")

  def lookup(self, directory: str, suffix: int, slice_spec: str) -> Optional[Dict[str, np.ndarray]]:
    """The cached arrays (observation memory-mapped, read-only), or None when absent or stale."""
    entry = self.entry_dir(directory, suffix, slice_spec)
    try:
      with open(os.path.join(entry, _META)) as f:
        meta = json.load(f)
    except (OSError, ValueError):
      return None
    signature = [list(s) for s in dqn_replay.checkpoint_signature(directory, suffix)]
    if meta.get("signature") != signature:
      return None
    try:
      names = meta.get("arrays", _SMALL)
      arrays = {name: np.load(os.path.join(entry, name + ".npy"), allow_pickle=False) for name in names}
      arrays["observation"] = np.load(os.path.join(entry, "observation.npy"), mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
      return None
    _advise_sequential(arrays["observation"])
    arrays["num_rows"] = np.array(meta["num_rows"], np.int64)
    return arrays

  def store(self, directory: str, suffix: int, slice_spec: str, small: Dict[str, np.ndarray],
            frame_chunks: Iterable[np.ndarray]) -> Dict[str, np.ndarray]:
    """Writes an entry from the small arrays and a stream of frame chunks; returns `lookup` of it."""
    signature = [list(s) for s in dqn_replay.checkpoint_signature(directory, suffix)]
    entry = self.entry_dir(directory, suffix, slice_spec)
    temp = f"{entry}.tmp-{uuid.uuid4().hex}"
    os.makedirs(temp)
    try:
      # The five small arrays, plus any extra ones of the slice (e.g. the uniform subset's transition table).
      names = list(_SMALL) + sorted(k for k in small if k not in _SMALL and k not in ("num_rows", "observation"))
      for name in names:
        np.save(os.path.join(temp, name + ".npy"), np.asarray(small[name]), allow_pickle=False)
      rows = len(small["action"])
      with open(os.path.join(temp, "observation.npy"), "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "|u1", "fortran_order": False, "shape": (rows,) + dqn_replay.OBSERVATION_SHAPE})
        written = 0
        for chunk in frame_chunks:
          f.write(np.ascontiguousarray(chunk, np.uint8).tobytes())
          written += len(chunk)
      if written != rows:
        raise DataError(f"checkpoint {suffix} in {directory}: got {written} frames for {rows} rows")
      with open(os.path.join(temp, _META), "w") as f:
        json.dump({"source": _source_id(directory), "suffix": int(suffix), "slice": slice_spec,
                   "num_rows": int(small["num_rows"]), "signature": signature, "arrays": names}, f)
      if os.path.isdir(entry):  # stale: move aside first, a folder cannot be renamed over a full one
        old = f"{entry}.old-{uuid.uuid4().hex}"
        try:
          os.rename(entry, old)
          shutil.rmtree(old, ignore_errors=True)
        except OSError:
          pass
      try:
        os.rename(temp, entry)
      except OSError:  # another process finished the same entry first: keep theirs
        shutil.rmtree(temp, ignore_errors=True)
    except BaseException:
      shutil.rmtree(temp, ignore_errors=True)
      raise
    arrays = self.lookup(directory, suffix, slice_spec)
    if arrays is None:
      raise DataError(f"cache entry {entry} could not be read back after writing it")
    return arrays
