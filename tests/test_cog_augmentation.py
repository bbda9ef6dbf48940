"""COG's random-crop image augmentation (avisingh599/cog rlkit/torch/conv_networks.py RandomCrop, padding 4),
checked against crops cut by hand from zero-padded numpy images."""
import numpy as np
import pytest
import tensorflow as tf

from batch_rl_dr3.continuous import networks


def hand_crop(image, padding, row, column):
  """Zero-pad by `padding` on each side, cut the H x W window at (row, column): COG's RandomCrop by hand."""
  h, w, c = image.shape
  padded = np.zeros((h + 2 * padding, w + 2 * padding, c), image.dtype)
  padded[padding:padding + h, padding:padding + w] = image
  return padded[row:row + h, column:column + w]


def test_pad_and_random_crop_equals_the_hand_crop():
  rng = np.random.default_rng(0)
  images = rng.integers(1, 256, (5, 6, 7, 3), dtype=np.uint8)  # no zeros, so padding shows
  offsets = np.array([[0, 0], [8, 8], [4, 4], [0, 8], [3, 6]], np.int32)
  got = networks.pad_and_random_crop(tf.constant(images), 4, tf.constant(offsets)).numpy()
  assert got.shape == images.shape and got.dtype == np.uint8
  for b, (row, column) in enumerate(offsets):
    np.testing.assert_array_equal(got[b], hand_crop(images[b], 4, row, column))
  np.testing.assert_array_equal(got[2], images[2])  # offset (p, p) is the original image
  # Offset (0, 0): the first 4 rows and columns are padding, the rest the image's top-left 2 x 3 corner.
  assert not got[0, :4].any() and not got[0, :, :4].any()
  np.testing.assert_array_equal(got[0, 4:, 4:], images[0, :2, :3])


def test_encoder_crops_every_image_of_a_batch_independently_and_leaves_single_images():
  rng = np.random.default_rng(1)
  images = rng.integers(1, 256, (64, 10, 10, 3), dtype=np.uint8)
  encoder = networks.ImageEncoder(augmentation_padding=4, seed=3)
  cropped = encoder.augment(tf.constant(images)).numpy()
  offsets = []
  for b in range(len(images)):
    matches = [(r, c) for r in range(9) for c in range(9)
               if np.array_equal(cropped[b], hand_crop(images[b], 4, r, c))]
    assert len(matches) == 1, f"image {b} is not one of its 81 crops"
    offsets.append(matches[0])
  offsets = np.array(offsets)
  assert offsets.min() == 0 and offsets.max() == 8  # uniform over [0, 2p] on both axes
  assert len({tuple(o) for o in offsets}) > 20  # per-image offsets, not one per batch
  # The call path: a batch of more than one image is cropped (COG's rule), one image is not.
  one = tf.constant(images[:1])
  plain = networks.ImageEncoder(augmentation_padding=0, seed=3)
  plain(one)
  encoder(one)
  encoder.set_weights(plain.get_weights())
  np.testing.assert_allclose(encoder(one).numpy(), plain(one).numpy())
  assert not np.allclose(encoder(tf.constant(images[:8])).numpy(), plain(tf.constant(images[:8])).numpy())


def test_encoder_crops_are_seeded_and_distinct_per_network():
  images = tf.constant(np.random.default_rng(2).integers(1, 256, (16, 10, 10, 3), dtype=np.uint8))
  same = [networks.ImageEncoder(augmentation_padding=4, seed=7).augment(images).numpy() for _ in range(2)]
  np.testing.assert_array_equal(same[0], same[1])
  assert networks.encoder_seed(0, "CriticNetwork2") != networks.encoder_seed(0, "TargetCriticNetwork1")
  assert networks.encoder_seed(0, "CriticNetwork2") != networks.encoder_seed(1, "CriticNetwork2")
  with pytest.raises(ValueError, match="augmentation_padding=-1; expected >= 0"):
    networks.ImageEncoder(augmentation_padding=-1)
