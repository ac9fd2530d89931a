"""Representation: how much of a label the posterior means carry, against raw pixels.

Features are the flattened posterior means E_q[z|x] (for a hierarchy, every group's along the
path of posterior means, joined). Two read-outs, both also run on raw pixels with the same budget:

- a linear probe: multinomial logistic regression on standardised features, fitted by Adam
  for a fixed number of steps (full batch, or minibatches drawn with replacement) with L2
  weight decay on the weights; the usual linear-evaluation protocol for representations;
- k-nearest-neighbour accuracy under Euclidean distance, test points in chunks so memory is
  ``chunk_size * num_train``.

For 2-D latents, ``latent_scatter`` draws the posterior means coloured by label (matplotlib's
Agg canvas, no pyplot state).
"""

from __future__ import annotations

import math
import os
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vae_jax import checks
from vae_jax import images as images_lib
from vae_jax.model import latent_groups


def features(model, params, x, *, batch_size=256):
    """(N, F) posterior means of ``x`` (a batch in the model's input kind), every latent group
    flattened and joined (F = the latent's size), computed ``batch_size`` examples at a time."""
    checks.check_count("batch_size", batch_size)
    if not checks.check_data("x", x, model.likelihood.input_kind, model.data_shape):
        raise ValueError(f"x: expected a batch (N, *{model.data_shape}), got one example {jnp.shape(x)}")
    x = jnp.asarray(x)
    chunks = [_posterior_mean(model, params, x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]
    return jnp.concatenate(chunks).reshape(x.shape[0], -1)


@partial(jax.jit, static_argnums=0)
def _posterior_mean(model, params, x):
    means = jax.tree_util.tree_leaves(model.posterior(params, x)[0])
    return jnp.concatenate([m.reshape(m.shape[0], -1) for m in means], axis=-1)


def standardise(train, *others, eps=1e-6):
    """(train, *others) shifted and scaled by the training set's per-feature mean and std."""
    mean, std = jnp.mean(train, axis=0), jnp.std(train, axis=0) + eps
    return tuple((a - mean) / std for a in (train, *others))


def _check_labelled(name, feats, labels):
    feats, labels = jnp.asarray(feats, jnp.float32), jnp.asarray(labels)
    if feats.ndim != 2 or labels.shape != (feats.shape[0],) or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(
            f"{name}: expected features (N, D) and integer labels (N,), got {feats.shape} and {labels.shape} {labels.dtype}"
        )
    return feats, labels


def probe_loss(weights, bias, feats, labels, weight_decay):
    """mean_i -log softmax(W^T f_i + b)[y_i] + (weight_decay / 2) ||W||^2."""
    logits = feats @ weights + bias
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return nll + 0.5 * weight_decay * jnp.sum(jnp.square(weights))


@partial(jax.jit, static_argnames=("num_classes", "steps", "learning_rate", "weight_decay", "batch_size"))
def _fit_probe(feats, labels, key, *, num_classes, steps, learning_rate, weight_decay, batch_size):
    optimiser = optax.adam(learning_rate)
    params = (jnp.zeros((feats.shape[1], num_classes)), jnp.zeros((num_classes,)))

    def step(carry, t):
        params, state = carry
        if batch_size is None:
            batch_feats, batch_labels = feats, labels
        else:
            idx = jax.random.randint(jax.random.fold_in(key, t), (batch_size,), 0, feats.shape[0])
            batch_feats, batch_labels = feats[idx], labels[idx]
        loss, grads = jax.value_and_grad(lambda p: probe_loss(*p, batch_feats, batch_labels, weight_decay))(
            params
        )
        updates, state = optimiser.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), loss

    (params, _), losses = jax.lax.scan(step, (params, optimiser.init(params)), jnp.arange(steps))
    return params, losses


def linear_probe(train_features, train_labels, test_features, test_labels, key=None, *, num_classes=None,
                 steps=500, learning_rate=1e-2, weight_decay=1e-4, batch_size=None):  # fmt: skip
    """Fit a multinomial logistic regression on standardised training features; score both sets.

    Returns ``{"train_accuracy", "test_accuracy", "final_loss"}``. ``batch_size=None`` is full
    batch (deterministic); otherwise ``key`` draws the minibatches.
    """
    train_f, train_y = _check_labelled("train", train_features, train_labels)
    test_f, test_y = _check_labelled("test", test_features, test_labels)
    num_classes = num_classes or int(max(train_y.max(), test_y.max())) + 1
    if batch_size is not None and key is None:
        raise ValueError("key: a minibatch probe (batch_size set) needs a PRNG key")
    train_f, test_f = standardise(train_f, test_f)
    (weights, bias), losses = _fit_probe(
        train_f, train_y, key, num_classes=num_classes, steps=steps, learning_rate=learning_rate,
        weight_decay=weight_decay, batch_size=batch_size,
    )  # fmt: skip

    def accuracy(f, y):
        return float(jnp.mean(jnp.argmax(f @ weights + bias, axis=-1) == y))

    return {
        "train_accuracy": accuracy(train_f, train_y),
        "test_accuracy": accuracy(test_f, test_y),
        "final_loss": float(losses[-1]),
    }


@partial(jax.jit, static_argnames=("k", "num_classes", "chunk_size"))
def _knn_predict(train_f, train_y, test_f, *, k, num_classes, chunk_size):
    train_sq = jnp.sum(jnp.square(train_f), axis=-1)
    num_test = test_f.shape[0]
    padded = jnp.pad(test_f, ((0, -num_test % chunk_size), (0, 0)))

    def predict(chunk):
        # ||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2; ||a||^2 is the same for every b, so drop it.
        distances = train_sq[None] - 2.0 * chunk @ train_f.T
        _, nearest = jax.lax.top_k(-distances, k)
        neighbour_labels = train_y[nearest]  # (chunk, k), nearest first
        votes = jnp.sum(jax.nn.one_hot(neighbour_labels, num_classes), axis=1)
        # Votes are integers, so +0.5 only breaks ties, in favour of the nearest neighbour's class.
        votes = votes + 0.5 * jax.nn.one_hot(neighbour_labels[:, 0], num_classes)
        return jnp.argmax(votes, axis=-1)

    chunks = padded.reshape(-1, chunk_size, padded.shape[-1])
    return jax.lax.map(predict, chunks).reshape(-1)[:num_test]


def knn_accuracy(
    train_features, train_labels, test_features, test_labels, *, k=5, num_classes=None, chunk_size=256
):
    """Accuracy of the majority vote of the ``k`` nearest training points (Euclidean)."""
    train_f, train_y = _check_labelled("train", train_features, train_labels)
    test_f, test_y = _check_labelled("test", test_features, test_labels)
    checks.check_count("k", k)
    if k > train_f.shape[0]:
        raise ValueError(f"k: expected at most the {train_f.shape[0]} training points, got {k}")
    num_classes = num_classes or int(max(train_y.max(), test_y.max())) + 1
    chunk_size = min(chunk_size, test_f.shape[0])
    predictions = _knn_predict(train_f, train_y, test_f, k=k, num_classes=num_classes, chunk_size=chunk_size)
    return float(jnp.mean(predictions == test_y))


def latent_scatter(path, means_2d, labels, title="posterior means"):
    """Write a scatter plot of 2-D posterior means coloured by label to ``path`` (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    means_2d, labels = np.asarray(means_2d), np.asarray(labels)
    if means_2d.ndim != 2 or means_2d.shape[1] != 2:
        raise ValueError(f"means_2d: expected (N, 2), got {means_2d.shape}")
    figure = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    points = axes.scatter(means_2d[:, 0], means_2d[:, 1], c=labels, cmap="tab10", s=6)
    figure.colorbar(points, ax=axes, label="label")
    axes.set(xlabel="z1", ylabel="z2", title=title)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path)
    return path


def representation_report(model, params, train_x, train_y, test_x, test_y, key=None, *, probe_steps=500,
                          learning_rate=1e-2, weight_decay=1e-4, batch_size=None, k=5):  # fmt: skip
    """Linear-probe and kNN accuracy on posterior means and on raw pixels, same budget for both.

    ``train_x``/``test_x`` are batches in the model's input kind. Returns
    ``{"latent": {"probe": {...}, "knn_accuracy": a}, "pixels": {...}, "chance": 1/num_classes,
    "latent_dim": D}``.
    """
    train_y, test_y = jnp.asarray(train_y), jnp.asarray(test_y)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    probe = partial(
        linear_probe, key=key, num_classes=num_classes, steps=probe_steps, learning_rate=learning_rate,
        weight_decay=weight_decay, batch_size=batch_size,
    )  # fmt: skip
    spaces = {
        "latent": (features(model, params, train_x), features(model, params, test_x)),
        "pixels": tuple(jnp.asarray(x, jnp.float32).reshape(x.shape[0], -1) for x in (train_x, test_x)),
    }
    report = {
        name: {
            "probe": probe(train_f, train_y, test_f, test_y),
            "knn_accuracy": knn_accuracy(train_f, train_y, test_f, test_y, k=k, num_classes=num_classes),
        }
        for name, (train_f, test_f) in spaces.items()
    }
    report["chance"] = 1.0 / num_classes
    report["latent_dim"] = int(spaces["latent"][0].shape[1])
    return report


SCATTER_FILE = "latent_scatter.png"


def output_files(model) -> list[str]:
    """The names of the files ``run_representation`` writes under ``out_dir`` for ``model`` (the
    scatter plot when its latent is 2-D), so a caller can check them before any work."""
    latent_size = sum(math.prod(group.shape) for group in latent_groups(model.latent_template))
    return [SCATTER_FILE] if latent_size == 2 else []


def run_representation(
    model, params, train_uint8, train_labels, test_uint8, test_labels, key, *, out_dir, **options
):
    """``representation_report`` on uint8 images (converted to the model's input kind); for a
    2-D latent also writes ``latent_scatter.png`` of the test set. Returns the report plus ``"files"``."""
    kind = model.likelihood.input_kind
    train_x = images_lib.uint8_to_model_input(np.asarray(train_uint8), kind)
    test_x = images_lib.uint8_to_model_input(np.asarray(test_uint8), kind)
    report = representation_report(model, params, train_x, train_labels, test_x, test_labels, key, **options)
    files = []
    if SCATTER_FILE in output_files(model):
        files.append(
            latent_scatter(os.path.join(out_dir, SCATTER_FILE), features(model, params, test_x), test_labels)
        )
    return {**report, "files": files}
