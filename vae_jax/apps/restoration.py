"""Restoration with a VAE prior: denoising and inpainting, for whole images of any size.

Images here are float32 in [0, 1] (noisy images may leave it); the model sees them in its
likelihood's input kind (``images.to_model_input``: discrete ``round(255 x)``) and its output
comes back as the likelihood's mean, clipped to [0, 1]. Functions named ``*_tiles`` work on a
batch of model-sized tiles ``(N, *model.data_shape)``; ``denoise`` and ``inpaint`` cut a whole
``(H, W, C)`` image into such tiles (``tiling``), restore them as one batch and stitch them.

Masks are boolean, True where a pixel is known, shaped ``(H, W)`` or ``(H, W, C)``. Inpainting
returns the known pixels exactly as given (``where(mask, image, fill)``).
"""

from __future__ import annotations

import math
import os
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vae_jax import checks, distributions, outputs
from vae_jax import images as images_lib
from vae_jax.apps import tiling

DENOISERS = ("posterior_mean", "map")
INPAINTERS = ("resample", "optimise")


# ---------------------------------------------------------------- degradations and baselines


def add_gaussian_noise(images, sigma, key):
    """y = x + sigma * eps, eps ~ N(0, I); not clipped, so the noise model stays exact."""
    return images + sigma * jax.random.normal(key, jnp.shape(images))


def gaussian_blur(image, sigma=1.0):
    """The Gaussian-blur baseline: edge-padded, so borders are not darkened by zero padding."""
    radius = max(1, math.ceil(3.0 * sigma))
    padded = jnp.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    import dm_pix

    return dm_pix.gaussian_blur(padded, sigma, 2 * radius + 1, padding="VALID")


def broadcast_mask(mask, image_shape):
    """A boolean mask ``(H, W)`` or ``(H, W, C)`` broadcast to ``image_shape`` (H, W, C)."""
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise ValueError(f"mask: expected a boolean array (True = known pixel), got dtype {mask.dtype}")
    if mask.ndim == 2:
        mask = mask[..., None]
    if mask.ndim != 3 or mask.shape[:2] != tuple(image_shape[:2]) or mask.shape[2] not in (1, image_shape[2]):
        raise ValueError(
            f"mask: expected shape (H, W) or (H, W, C) matching {tuple(image_shape)}, got {mask.shape}"
        )
    return jnp.broadcast_to(mask, image_shape)


def mean_fill(image, mask):
    """The mean-fill baseline: unknown pixels take the mean of the known ones, per channel."""
    mask = broadcast_mask(mask, image.shape)
    known = jnp.sum(mask, axis=(0, 1))
    means = jnp.sum(jnp.where(mask, image, 0.0), axis=(0, 1)) / jnp.maximum(known, 1)
    return jnp.where(mask, image, jnp.where(known > 0, means, 0.5))


def centre_square_mask(image_hw, fraction=0.5):
    """True everywhere except a centred square hole of side ``fraction * min(H, W)``."""
    height, width = image_hw
    side = max(1, round(fraction * min(height, width)))
    top, left = (height - side) // 2, (width - side) // 2
    mask = np.ones((height, width), bool)
    mask[top : top + side, left : left + side] = False
    return jnp.asarray(mask)


def random_pixel_mask(image_hw, key, known_fraction=0.5):
    """Each pixel (all its channels) known independently with probability ``known_fraction``."""
    return jax.random.bernoulli(key, known_fraction, tuple(image_hw))


def psnr(restored, clean):
    """PSNR in dB of [0, 1] images (``dm_pix.psnr``), per image."""
    import dm_pix

    return dm_pix.psnr(jnp.clip(restored, 0.0, 1.0), clean)


def ssim(restored, clean):
    """SSIM of [0, 1] images (``dm_pix.ssim``; the 11x11 window shrinks for tiny images)."""
    import dm_pix

    size = min(11, clean.shape[-3], clean.shape[-2])
    return dm_pix.ssim(jnp.clip(restored, 0.0, 1.0), clean, filter_size=size)


# ---------------------------------------------------------------- the model's pieces


def _mean_image(model, out):
    return jnp.clip(model.likelihood.mean(out), 0.0, 1.0)


def _check_tiles(model, name, tiles):
    if tuple(jnp.shape(tiles)[1:]) != tuple(model.data_shape) or jnp.ndim(tiles) != len(model.data_shape) + 1:
        raise ValueError(f"{name}: expected a batch (N, *{model.data_shape}), got {jnp.shape(tiles)}")


@partial(jax.jit, static_argnums=0)
def _decode_posterior_mean(model, params, images01):
    mean, _ = model.posterior(params, images_lib.to_model_input(images01, model.likelihood.input_kind))
    return mean, _mean_image(model, model.decoder_output(params, mean))


OBJECTIVES = ("gaussian_noise", "known_pixels")


def _log_likelihood(model, objective, out, target, mask, log_var):
    """The data term of a latent search, summed over the batch.

    ``"gaussian_noise"``: log N(y; x(z), exp(log_var) I), x(z) the likelihood's mean, y = target;
    ``"known_pixels"``: sum over mask of log p(x | z) under the model's own likelihood.
    """
    if objective == "gaussian_noise":
        # The mean unclipped: clipping to [0, 1] would zero the gradient wherever it binds.
        return jnp.sum(distributions.diag_gaussian_log_prob(target, model.likelihood.mean(out), log_var))
    # Per pixel, the known part that reads nothing unknown (its context: a pixel reading its
    # neighbours is scored only where they are known too; an unknown one holds no value to condition on).
    return jnp.sum(model.likelihood.known_log_prob(target, out, mask))


@partial(jax.jit, static_argnames=("model", "objective", "steps", "learning_rate"))
def _maximise_in_latent_space(model, params, z0, target, mask, log_var, *, objective, steps, learning_rate):
    """z* = argmax_z data term(z) + sum log p(z), by ``steps`` Adam steps from ``z0``."""
    optimiser = optax.adam(learning_rate)

    def loss(z):
        out = model.decoder_output(params, z)
        data = _log_likelihood(model, objective, out, target, mask, log_var)
        return -(data + jnp.sum(model.prior_log_prob(params, z)))

    def step(carry, _):
        z, state = carry
        value, grad = jax.value_and_grad(loss)(z)
        updates, state = optimiser.update(grad, state, z)
        return (optax.apply_updates(z, updates), state), value

    (z, _), losses = jax.lax.scan(step, (z0, optimiser.init(z0)), None, length=steps)
    return z, losses


# ---------------------------------------------------------------- denoising


def denoise_posterior_mean_tiles(model, params, noisy):
    """x_hat = E[x | z = mean of q(z | clip(y))]: encode the (clipped) noisy tiles, decode the mean."""
    _check_tiles(model, "noisy", noisy)
    return _decode_posterior_mean(model, params, jnp.clip(noisy, 0.0, 1.0))[1]


def denoise_map_tiles(model, params, noisy, sigma, *, steps=200, learning_rate=0.05):
    """x_hat = x(z*), z* = argmax_z log N(y; x(z), sigma^2 I) + log p(z) (MAP in latent space).

    ``x(z)`` is the likelihood's mean at z; for a hierarchy z is every group and log p(z) the
    whole top-down prior. The search starts at the posterior mean of ``clip(y)`` and takes
    ``steps`` Adam steps.
    """
    _check_tiles(model, "noisy", noisy)
    if not sigma > 0:
        raise ValueError(f"sigma: expected a positive noise standard deviation, got {sigma!r}")
    z0, _ = _decode_posterior_mean(model, params, jnp.clip(noisy, 0.0, 1.0))
    y = jnp.asarray(noisy, jnp.float32)
    z, _ = _maximise_in_latent_space(
        model, params, z0, y, jnp.ones(y.shape, bool), 2.0 * math.log(sigma),
        objective="gaussian_noise", steps=steps, learning_rate=learning_rate,
    )  # fmt: skip
    return _mean_image(model, model.decoder_output(params, z))


# ---------------------------------------------------------------- inpainting


@partial(jax.jit, static_argnames=("model", "iterations"))
def _resample(model, params, images01, mask, key, *, iterations):
    def step(x, t):
        keys = jax.random.split(jax.random.fold_in(key, t), x.shape[0])
        out = model.infer(params, images_lib.to_model_input(x, model.likelihood.input_kind), keys).decoder_out
        return jnp.where(mask, images01, _mean_image(model, out)), None

    x0 = jax.vmap(mean_fill)(images01, mask)
    x, _ = jax.lax.scan(step, x0, jnp.arange(iterations))
    return x


def inpaint_resample_tiles(model, params, images01, mask, key, *, iterations=50):
    """Iterative conditional resampling (Rezende, Mohamed & Wierstra 2014, sec. 6.2):
    start from the mean fill; repeat z ~ q(z | x_t), x_{t+1} = where(known, x, E[x | z]).

    Uses only the model protocol (``infer``), so hierarchical models work too.
    """
    _check_tiles(model, "images01", images01)
    checks.check_key("key", key)
    checks.check_count("iterations", iterations)
    mask = jnp.broadcast_to(mask, images01.shape)
    return _resample(model, params, jnp.asarray(images01, jnp.float32), mask, key, iterations=iterations)


def inpaint_optimise_tiles(model, params, images01, mask, *, steps=200, learning_rate=0.05):
    """z* = argmax_z sum_known log p(x_known | z) + log p(z), then unknown pixels := E[x | z*].

    The model's own likelihood scores the known pixels; the search starts at the posterior
    mean of the mean-filled tiles.
    """
    _check_tiles(model, "images01", images01)
    images01 = jnp.asarray(images01, jnp.float32)
    mask = jnp.broadcast_to(mask, images01.shape)
    z0, _ = _decode_posterior_mean(model, params, jax.vmap(mean_fill)(images01, mask))
    x_model = images_lib.to_model_input(images01, model.likelihood.input_kind)
    z, _ = _maximise_in_latent_space(
        model,
        params,
        z0,
        x_model,
        mask,
        0.0,
        objective="known_pixels",
        steps=steps,
        learning_rate=learning_rate,
    )
    return jnp.where(mask, images01, _mean_image(model, model.decoder_output(params, z)))


# ---------------------------------------------------------------- whole images


def _check_image(model, name, image):
    if jnp.ndim(image) != 3 or jnp.shape(image)[-1] != model.data_shape[-1]:
        raise ValueError(f"{name}: expected an (H, W, {model.data_shape[-1]}) image, got {jnp.shape(image)}")
    return jnp.asarray(image, jnp.float32)


def denoise(model, params, noisy, sigma, *, method="map", steps=200, learning_rate=0.05, tile_mode="edge"):
    """Denoise a whole ``(H, W, C)`` image ``y = x + sigma * eps`` tile by tile; returns [0, 1] floats.

    ``method``: ``"posterior_mean"`` (one encode-decode) or ``"map"`` (latent MAP under the
    Gaussian noise model, ``steps`` Adam steps).
    """
    if method not in DENOISERS:
        raise ValueError(f"method: expected one of {DENOISERS}, got {method!r}")
    noisy = _check_image(model, "noisy", noisy)
    if method == "posterior_mean":
        fn = lambda tiles: denoise_posterior_mean_tiles(model, params, tiles)
    else:
        fn = lambda tiles: denoise_map_tiles(
            model, params, tiles, sigma, steps=steps, learning_rate=learning_rate
        )
    return tiling.map_tiles(fn, noisy, model.data_shape[:2], tile_mode)


def inpaint(model, params, image, mask, key=None, *, method="resample", iterations=50, steps=200,
            learning_rate=0.05, tile_mode="edge"):  # fmt: skip
    """Fill the unknown pixels (``mask`` False) of a whole ``(H, W, C)`` [0, 1] image.

    ``method``: ``"resample"`` (iterative conditional resampling, needs ``key``) or
    ``"optimise"`` (latent optimisation on the known pixels). Known pixels come back exactly.
    """
    if method not in INPAINTERS:
        raise ValueError(f"method: expected one of {INPAINTERS}, got {method!r}")
    image = _check_image(model, "image", image)
    mask = broadcast_mask(mask, image.shape)
    if method == "resample" and key is None:
        raise ValueError("key: inpaint(method='resample') draws latents and needs a PRNG key")
    tiles, grid = tiling.split(image, model.data_shape[:2], tile_mode)
    mask_tiles, _ = tiling.split(mask, model.data_shape[:2], tile_mode)
    if method == "resample":
        filled = inpaint_resample_tiles(model, params, tiles, mask_tiles, key, iterations=iterations)
    else:
        filled = inpaint_optimise_tiles(
            model, params, tiles, mask_tiles, steps=steps, learning_rate=learning_rate
        )
    # The tiles already keep known pixels; this outer where makes the guarantee independent of them.
    return jnp.where(mask, image, tiling.stitch(filled, grid))


# ---------------------------------------------------------------- report


def _scores(restored, clean):
    return {"psnr": float(psnr(restored, clean)), "ssim": float(ssim(restored, clean))}


TASKS = ("denoise", "inpaint_centre", "inpaint_random")


def _check_options(tasks, *, noise_sigma, blur_sigma, iterations, steps):
    """Every setting the report's tasks use, checked before any work (those they do not use are
    left alone: the inpainting tasks add no noise, denoising does no resampling)."""
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"tasks: expected denoise, inpaint_centre or inpaint_random, got {sorted(unknown)}")
    checks.check_count("steps", steps, 0)
    if "denoise" in tasks:
        checks.check_finite_positive("noise_sigma", noise_sigma)
        checks.check_finite_positive("blur_sigma", blur_sigma)
    if any(task.startswith("inpaint_") for task in tasks):
        checks.check_count("iterations", iterations)


def output_files(tasks=TASKS) -> list[str]:
    """The names of the files ``run_restoration`` writes under ``out_dir`` for ``tasks``, so a
    caller can check them all before any work."""
    return [f"{task}.png" for task in tasks]


def restoration_report(model, params, image_uint8, key, *, noise_sigma=0.1, blur_sigma=1.0, tasks=TASKS,
                       iterations=50, steps=200,
                       learning_rate=0.05):  # fmt: skip
    """Degrade ``image_uint8`` (uint8 ``(H, W, C)``, any size), restore it, and score everything.

    Returns ``(report, images)``: ``report`` maps each task (``"denoise"``, ``"inpaint_centre"``,
    ``"inpaint_random"``) to ``{method: {"psnr": dB, "ssim": float}}`` against the clean image,
    methods and baselines side by side (denoise: ``noisy``, ``gaussian_blur``,
    ``posterior_mean``, ``map``; inpaint: ``masked`` (unknown = 0), ``mean_fill``, ``resample``,
    ``optimise``); ``images`` maps each task to ``{method: (H, W, C) [0, 1] image}``, the clean
    image and the degraded input first.
    """
    clean = jnp.asarray(images_lib.to_unit(np.asarray(image_uint8)))
    _check_image(model, "image_uint8", clean)
    _check_options(tasks, noise_sigma=noise_sigma, blur_sigma=blur_sigma, iterations=iterations, steps=steps)
    noise_key, mask_key, resample_key = jax.random.split(key, 3)
    noisy = add_gaussian_noise(clean, noise_sigma, noise_key)
    results = {}
    if "denoise" in tasks:
        results["denoise"] = {
            "clean": clean,
            "noisy": jnp.clip(noisy, 0.0, 1.0),
            "gaussian_blur": gaussian_blur(jnp.clip(noisy, 0.0, 1.0), blur_sigma),
            "posterior_mean": denoise(model, params, noisy, noise_sigma, method="posterior_mean"),
            "map": denoise(
                model, params, noisy, noise_sigma, method="map", steps=steps, learning_rate=learning_rate
            ),
        }
    for name in [task.removeprefix("inpaint_") for task in tasks if task.startswith("inpaint_")]:
        mask = (
            centre_square_mask(clean.shape[:2])
            if name == "centre"
            else random_pixel_mask(clean.shape[:2], mask_key)
        )
        mask3 = broadcast_mask(mask, clean.shape)
        results[f"inpaint_{name}"] = {
            "clean": clean,
            "masked": jnp.where(mask3, clean, 0.0),
            "mean_fill": mean_fill(clean, mask),
            "resample": inpaint(
                model, params, clean, mask, resample_key, method="resample", iterations=iterations
            ),
            "optimise": inpaint(
                model, params, clean, mask, method="optimise", steps=steps, learning_rate=learning_rate
            ),
        }
    report = {
        task: {method: _scores(image, clean) for method, image in restored.items() if method != "clean"}
        for task, restored in results.items()
    }
    if "denoise" in tasks:  # the inpainting tasks add no noise
        report["noise_sigma"] = noise_sigma
    return report, results


def run_restoration(model, params, image_uint8, key, *, out_dir, **options):
    """Write ``{task}.png`` (a row: clean, degraded, baselines, restorations) under ``out_dir``
    and return ``restoration_report``'s numbers plus ``"files"`` and each row's ``"columns"``."""
    report, results = restoration_report(model, params, image_uint8, key, **options)
    files, columns = [], {}
    for (task, restored), name in zip(results.items(), output_files(results), strict=True):
        columns[task] = list(restored)
        row = jnp.stack(list(restored.values()))
        files.append(outputs.save_grid(os.path.join(out_dir, name), row, cols=len(restored)))
    return {**report, "files": files, "columns": columns}
