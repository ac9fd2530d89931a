"""A model scored on a set of uint8 images, batch by batch: the test ELBO with its KL terms, and
the importance-sampled log-likelihood of ``evaluation.log_likelihood``, each also in bits/dim.

The batch that starts at image ``start`` draws from ``fold_in(key, start)``: a result depends on
the images, the key and the batch size only.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from vae_jax import evaluation, training
from vae_jax import images as images_lib


def evaluate_elbo(model, params, images: np.ndarray, key, *, likelihood_input: str, batch_size: int,
                  progress=None) -> dict:  # fmt: skip
    """Mean test ELBO, KL (total and per group) and bits/dim over ``images`` (uint8);
    ``progress(n)`` is called after every batch of n images."""
    evaluate = training.make_eval_fn(model, likelihood_input)
    totals = None
    for start in range(0, len(images), batch_size):
        terms = evaluate(params, images[start : start + batch_size], jax.random.fold_in(key, start))
        if progress is not None:
            progress(len(images[start : start + batch_size]))
        sums = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64).sum(), terms)
        totals = sums if totals is None else jax.tree_util.tree_map(np.add, totals, sums)
    n = len(images)
    elbo = (totals.reconstruction - totals.kl) / n
    dims = math.prod(model.data_shape)
    return {
        "elbo": float(elbo),
        "reconstruction": float(totals.reconstruction / n),
        "kl": float(totals.kl / n),
        "kl_groups": [float(g / n) for g in totals.kl_groups],
        "bits_per_dim": float(evaluation.bits_per_dim(elbo, dims, dequantized=likelihood_input == "dequantized")),
        "num_images": n,
    }


def evaluate_log_likelihood(model, params, images: np.ndarray, key, *, likelihood_input: str, k: int,
                            batch_size: int, progress=None) -> dict:  # fmt: skip
    """Importance-sampled test NLL (k samples) in nats and bits/dim, batch by batch;
    ``progress(n)`` is called after every batch of n images."""

    @jax.jit
    def batch_log_likelihood(batch, batch_key):
        data_key, sample_key = jax.random.split(batch_key)
        x = images_lib.prepare(batch, likelihood_input, data_key)
        return evaluation.log_likelihood(model, params, x, sample_key, k=k)

    total = 0.0
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        total += float(np.sum(batch_log_likelihood(batch, jax.random.fold_in(key, start))))
        if progress is not None:
            progress(len(batch))
    mean = total / len(images)
    dims = math.prod(model.data_shape)
    bpd = evaluation.bits_per_dim(mean, dims, dequantized=likelihood_input == "dequantized")
    return {"k": k, "nll_nats": -mean, "bits_per_dim": float(bpd), "num_images": len(images)}


def evaluate_rate_distortion(model, params, images: np.ndarray, *, batch_size: int, lmbda: float) -> dict:
    """A lossy codec on ``images`` (uint8, sides multiples of its stride) with its latents rounded as
    the coder rounds them: mean bits per pixel (the entropy coder's estimate), MSE on 0..255,
    PSNR of that mean MSE, and the loss R + lambda D."""
    from vae_jax import rate_distortion

    terms_of = rate_distortion.jitted_quantized_terms(model)
    bits = squared = 0.0
    for start in range(0, len(images), batch_size):
        x = np.asarray(images[start : start + batch_size], np.float32) / 255.0
        terms = terms_of(params, x)
        bits += float(np.sum(np.asarray(terms.y_bits, np.float64) + np.asarray(terms.z_bits, np.float64)))
        squared += float(np.sum(np.asarray(terms.squared_error, np.float64)))
    n, (height, width, channels) = len(images), images.shape[1:]
    rate, distortion = bits / (n * height * width), squared / (n * height * width * channels)
    return {
        "bits_per_pixel": rate,
        "mse": distortion,
        "psnr": float(rate_distortion.psnr(distortion)),
        "loss": rate + lmbda * distortion,
        "num_images": n,
    }
