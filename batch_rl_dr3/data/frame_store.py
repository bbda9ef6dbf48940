"""How frames are stored and unpacked: one 84x84 frame per stored row, 7,056 bytes held as 1,764 int32 words
(gathers move 4x fewer elements), never stacked copies; stacks are rebuilt from gathered words."""
import sys

import numpy as np
import tensorflow as tf

FRAME_BYTES = 84 * 84
# Frames go into the frame variable 1,024 rows (7 MB) at a time: the scatter's staging copy then stays in the
# CPU cache, which made a cached load ~2x faster than 8,192-row scatters (bench_data, cached_vs_gz_load).
COPY_ROWS = 1024
_LITTLE_ENDIAN = sys.byteorder == "little"
FRAME_WORDS = 84 * 84 // 4  # frames are stored as int32 words of 4 pixels: gathers move 4x fewer elements


def as_words(frames: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(frames, np.uint8).reshape(len(frames), FRAME_WORDS * 4).view(np.int32)


def _signed(mask: int) -> np.int32:
  return np.array(mask, np.uint32).view(np.int32)


_LOW_BYTES, _HIGH_BYTES, _LOW_HALF, _HIGH_HALF = (_signed(m) for m in (0x00FF00FF, 0xFF00FF00, 0x0000FFFF,
                                                                        0xFFFF0000))


# How gathered frame words become [B, 84, 84, stack] bytes. Measured on a 2-core CPU, batch 32: inside an XLA
# function the SWAR byte shuffle takes ~0.4 ms and a uint8 transpose ~1.7 ms; in graph mode (and in tf.data) it
# is the other way round, ~3.7 ms against ~1.9 ms. The default follows the CPU default of the train step
# (graph mode); use 'swar' together with `OfflineAgent.jit_compile = True`.
FRAME_UNPACKING = ("transpose", "swar")


def stack_frames(gathered: tf.Tensor, unpacking: str = "transpose") -> tf.Tensor:
  """[B, 84, 84, stack] uint8 from gathered frame words [B, stack, 1764] int32 (oldest frame first)."""
  batch = tf.shape(gathered)[0]
  if unpacking == "transpose" or gathered.shape[1] != 4 or not _LITTLE_ENDIAN:
    pixels = tf.reshape(tf.bitcast(gathered, tf.uint8), [batch, -1, 84, 84])
    return tf.transpose(pixels, [0, 2, 3, 1])
  # A 4x4 byte transpose of each group of words (frame j, pixels 4k..4k+3) -> (pixel k, frames 0..3), with
  # masks and shifts (SWAR): a uint8 transpose or gather is many times slower on CPU, in XLA or not.
  shift = tf.bitwise.right_shift
  w0, w1, w2, w3 = gathered[:, 0], gathered[:, 1], gathered[:, 2], gathered[:, 3]
  t0 = (w0 & _LOW_BYTES) | tf.bitwise.left_shift(w1 & _LOW_BYTES, 8)
  t1 = (shift(w0, 8) & _LOW_BYTES) | (w1 & _HIGH_BYTES)
  t2 = (w2 & _LOW_BYTES) | tf.bitwise.left_shift(w3 & _LOW_BYTES, 8)
  t3 = (shift(w2, 8) & _LOW_BYTES) | (w3 & _HIGH_BYTES)
  o0 = (t0 & _LOW_HALF) | tf.bitwise.left_shift(t2, 16)
  o1 = (t1 & _LOW_HALF) | tf.bitwise.left_shift(t3, 16)
  o2 = (shift(t0, 16) & _LOW_HALF) | (t2 & _HIGH_HALF)
  o3 = (shift(t1, 16) & _LOW_HALF) | (t3 & _HIGH_HALF)
  pixels = tf.bitcast(tf.stack([o0, o1, o2, o3], axis=-1), tf.uint8)  # [B, 1764, 4 pixels, 4 frames]
  return tf.reshape(pixels, [batch, 84, 84, 4])

