"""``DataSource``: training batches as a pure function of (step, batch_size, seed).

A training run asks for batch ``step`` and gets the same pixels whether it ran from the start
or resumed from a checkpoint at that step: nothing is streamed, so nothing has to be replayed.

Epochs are honest: ``steps_per_epoch(batch_size) = num_train // batch_size`` (the remainder of
an epoch is dropped), step ``s`` belongs to epoch ``s // steps_per_epoch`` and reads positions
``(s % steps_per_epoch) * batch_size ...`` of that epoch's order, which is drawn from a NumPy
generator seeded by ``(seed, epoch)``. Within an epoch no example repeats.
"""

from __future__ import annotations

import numpy as np

from vae_jax.checks import check_count
from vae_jax.data.errors import DataSourceError


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator that orders (and, for crop sources, places the crops of) one epoch.

    Seeded by the pair ``(seed, epoch)`` through ``SeedSequence``, so nearby seeds and epochs
    give unrelated streams, and any epoch can be drawn without drawing the ones before it.
    """
    return np.random.default_rng(np.random.SeedSequence([seed, epoch]))


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which epoch ``epoch`` visits ``num_examples`` examples."""
    return epoch_rng(seed, epoch).permutation(num_examples)


def read_only(array):
    """``array`` with NumPy writes disabled (other objects unchanged): a source hands out its fixed
    arrays without copying, and an in-place edit by a caller must fail rather than corrupt them."""
    if isinstance(array, np.ndarray):
        array.flags.writeable = False
    return array


class DataSource:
    """Base class: a training set sampled by (step, batch_size, seed) plus a fixed test set.

    Subclasses set ``name``, ``image_shape`` (H, W, C) and ``num_train`` (examples per epoch)
    and implement ``_epoch_examples`` and ``test_images``. All images are uint8 NHWC.
    """

    name: str
    image_shape: tuple[int, int, int]
    num_train: int

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, image_shape={self.image_shape}, num_train={self.num_train})"

    def steps_per_epoch(self, batch_size: int) -> int:
        """Whole batches in one epoch; the last ``num_train % batch_size`` examples are dropped."""
        batch_size = check_count("batch_size", batch_size, 1)
        if batch_size > self.num_train:
            raise ValueError(
                f"batch_size: {self.name} has {self.num_train} training examples per epoch, "
                f"fewer than one batch of {batch_size}"
            )
        return self.num_train // batch_size

    def train_batch(self, step: int, batch_size: int, seed: int, reshuffle: bool = True) -> np.ndarray:
        """Batch number ``step``: uint8 ``(batch_size, H, W, C)``, a pure function of its arguments."""
        return self.train_batches(step, 1, batch_size, seed, reshuffle)[0]

    def train_batches(
        self, start_step: int, num_steps: int, batch_size: int, seed: int, reshuffle: bool = True
    ) -> np.ndarray:
        """Batches ``start_step .. start_step + num_steps - 1`` stacked: ``(num_steps, B, H, W, C)``.

        Equal to stacking ``train_batch`` for each step, but gathered in one pass per epoch, for a
        ``lax.scan`` that runs several steps per dispatch. Each epoch visits the examples in an
        order of its own; with ``reshuffle=False`` every epoch repeats the first epoch's batches.
        """
        start_step = check_count("start_step", start_step, 0)
        num_steps = check_count("num_steps", num_steps, 0)
        seed = check_count("seed", seed, 0)
        steps_per_epoch = self.steps_per_epoch(batch_size)

        steps = start_step + np.arange(num_steps)
        epochs = steps // steps_per_epoch if reshuffle else np.zeros_like(steps)
        positions = (steps % steps_per_epoch)[:, None] * batch_size + np.arange(batch_size)
        batches = np.empty((num_steps, batch_size, *self.image_shape), dtype=np.uint8)
        # A span of steps touches one epoch, or a few when it is long; each is drawn once.
        for epoch in np.unique(epochs):
            in_epoch = epochs == epoch
            examples = self._epoch_examples(seed, int(epoch), positions[in_epoch].ravel())
            batches[in_epoch] = examples.reshape(-1, batch_size, *self.image_shape)
        return batches

    def _epoch_examples(self, seed: int, epoch: int, positions: np.ndarray) -> np.ndarray:
        """The examples at ``positions`` (0 <= p < num_train) of epoch ``epoch``'s order."""
        raise NotImplementedError

    def test_images(self) -> np.ndarray:
        """The fixed test set, uint8 ``(N, H, W, C)``."""
        raise NotImplementedError

    def test_labels(self) -> np.ndarray | None:
        """Integer labels of ``test_images`` (int64), or None when the source has none."""
        return None

    def train_images_and_labels(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The whole training set as fixed arrays (for representation probes); labels may be None."""
        raise NotImplementedError


class ArraySource(DataSource):
    """A training set of fixed examples, visited in a fresh permutation every epoch.

    ``train_images`` is a uint8 array ``(N, H, W, C)`` or any object with ``len()``, ``.shape``
    and NumPy-style indexing by an integer array (a lazy reader for datasets too big for memory).
    The arrays are kept, not copied, and made read-only.
    """

    def __init__(
        self,
        name: str,
        train_images,
        train_labels: np.ndarray | None,
        test_images: np.ndarray,
        test_labels: np.ndarray | None,
    ):
        if len(train_images.shape) != 4:
            raise DataSourceError(
                f"{name}: training images must be (N, H, W, C), got shape {train_images.shape}"
            )
        if tuple(test_images.shape[1:]) != tuple(train_images.shape[1:]):
            raise DataSourceError(
                f"{name}: test images {test_images.shape[1:]} differ in shape from training images "
                f"{train_images.shape[1:]}"
            )
        self.name = name
        self.image_shape = tuple(int(d) for d in train_images.shape[1:])
        self.num_train = len(train_images)
        self._train_images = read_only(train_images)
        self._train_labels = read_only(train_labels)
        self._test_images = read_only(test_images)
        self._test_labels = read_only(test_labels)

    def _epoch_examples(self, seed, epoch, positions):
        indices = epoch_permutation(self.num_train, seed, epoch)[positions]
        return np.asarray(self._train_images[indices], dtype=np.uint8)

    def test_images(self):
        return self._test_images

    def test_labels(self):
        return self._test_labels

    def train_images_and_labels(self):
        return self._train_images, self._train_labels
