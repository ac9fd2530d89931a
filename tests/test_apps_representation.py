"""Linear probe and kNN: beat chance on separable toy data, agree with brute force."""

import jax
import numpy as np
import pytest

import vae_jax
from vae_jax.apps import representation


def _blobs(n, seed, shape=(4, 4, 1), separation=0.3):
    """Two Gaussian blobs in pixel space: class c has mean 0.35 + separation * c, clipped to [0, 1]."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    x = 0.35 + separation * labels[:, None, None, None] + 0.15 * rng.normal(size=(n, *shape))
    return np.clip(x, 0, 1).astype(np.float32), labels.astype(np.int32)


@pytest.fixture(scope="module")
def toy():
    return _blobs(200, 0), _blobs(100, 1)


def test_probe_and_knn_on_pixels_beat_chance(toy):
    (train_x, train_y), (test_x, test_y) = toy
    flat = lambda x: x.reshape(x.shape[0], -1)
    probe = representation.linear_probe(flat(train_x), train_y, flat(test_x), test_y, steps=200)
    assert probe["test_accuracy"] > 0.9 and probe["train_accuracy"] > 0.9
    assert representation.knn_accuracy(flat(train_x), train_y, flat(test_x), test_y, k=5) > 0.9


def test_minibatch_probe(toy):
    (train_x, train_y), (test_x, test_y) = toy
    flat = lambda x: x.reshape(x.shape[0], -1)
    probe = representation.linear_probe(
        flat(train_x), train_y, flat(test_x), test_y, jax.random.key(0), steps=200, batch_size=32
    )
    assert probe["test_accuracy"] > 0.9
    with pytest.raises(ValueError, match="key"):
        representation.linear_probe(flat(train_x), train_y, flat(test_x), test_y, batch_size=32)


def test_knn_matches_brute_force():
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(50, 3)), rng.normal(size=(23, 3))
    train_y, test_y = rng.integers(0, 3, 50), rng.integers(0, 3, 23)
    k = 3
    distances = ((test[:, None] - train[None]) ** 2).sum(-1)
    nearest = np.argsort(distances, axis=1)[:, :k]
    predicted = []
    for row in train_y[nearest]:
        counts = np.bincount(row, minlength=3).astype(float)
        counts[row[0]] += 0.5
        predicted.append(np.argmax(counts))
    expected = float(np.mean(np.array(predicted) == test_y))
    assert representation.knn_accuracy(train, train_y, test, test_y, k=k, chunk_size=5) == pytest.approx(
        expected
    )


def test_features_are_chunked_posterior_means(gaussian_mlp_2d, toy):
    model, params = gaussian_mlp_2d
    (train_x, _), _ = toy
    feats = representation.features(model, params, train_x, batch_size=64)
    mean, _ = vae_jax.encode(model, params, train_x)
    assert feats.shape == (200, 2)
    np.testing.assert_allclose(feats, mean.reshape(200, -1), atol=1e-5)
    with pytest.raises(ValueError, match="batch"):
        representation.features(model, params, train_x[0])


def test_report_on_latents_beats_chance_and_scatter(gaussian_mlp_2d, toy, tmp_path):
    model, params = gaussian_mlp_2d
    (train_x, train_y), (test_x, test_y) = toy
    report = representation.representation_report(
        model, params, train_x, train_y, test_x, test_y, probe_steps=200
    )
    assert report["chance"] == 0.5 and report["latent_dim"] == 2
    # Even an untrained encoder is a smooth map of the pixels; the blobs stay apart.
    assert report["latent"]["probe"]["test_accuracy"] > 0.7
    assert report["latent"]["knn_accuracy"] > 0.7
    assert report["pixels"]["probe"]["test_accuracy"] > 0.9
    path = representation.latent_scatter(
        tmp_path / "scatter.png", representation.features(model, params, test_x), test_y
    )
    assert path.exists() and path.stat().st_size > 1000


def test_run_representation_writes_scatter(gaussian_mlp_2d, tmp_path):
    model, params = gaussian_mlp_2d
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 4, 4, 1), dtype=np.uint8)
    y = rng.integers(0, 3, 40).astype(np.int32)
    report = representation.run_representation(model, params, x, y, x, y, None, out_dir=tmp_path, probe_steps=20, k=3)
    assert (tmp_path / "latent_scatter.png").exists() and report["files"]


def test_bad_labels_are_refused():
    with pytest.raises(ValueError, match="integer labels"):
        representation.linear_probe(np.zeros((4, 2)), np.zeros(4), np.zeros((2, 2)), np.zeros(2, int))
