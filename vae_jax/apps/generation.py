"""Generation: samples at several temperatures, latent interpolations, hierarchical resampling.

Images come out as [0, 1] floats ``(N, H, W, C)``; ``run_generation`` writes them as PNG grids.
Images going in (the endpoints of an interpolation, the image whose coarse structure a
hierarchical model keeps) are in the model's input kind, like everything ``vae_jax`` encodes.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import vae_jax
from vae_jax import checks, outputs
from vae_jax import images as images_lib
from vae_jax.model import HierarchicalModel

INTERPOLATIONS = ("linear", "slerp")


def sample_grids(model, params, key, *, num_samples=16, temperatures=(0.5, 0.7, 0.85, 1.0), return_mean=True):
    """{temperature: (num_samples, H, W, C) in [0, 1]}: x ~ p(x|z), z ~ p(z) at each temperature.

    Temperature ``T`` scales the prior's noise, z = mu + T sigma eps (Kingma & Dhariwal 2018
    use the same device for Glow); ``T < 1`` trades diversity for typicality. Every
    temperature reuses ``key``, so sample ``i`` has the same eps at every temperature and a
    column of grids shows one sample cooling. ``return_mean`` shows the likelihood's mean
    rather than a pixel draw (pixel noise of a discretized logistic hides structure).
    """
    grids = {}
    for temperature in temperatures:
        values = vae_jax.sample(
            model, params, key, num_samples=num_samples, temperature=float(temperature), return_mean=return_mean
        )
        grids[float(temperature)] = (
            jnp.clip(values, 0.0, 1.0)
            if return_mean
            else images_lib.from_model_values(values, model.likelihood.input_kind)
        )
    return grids


def lerp(z_a, z_b, t):
    """Linear interpolation (1 - t) z_a + t z_b."""
    return (1.0 - t) * z_a + t * z_b


def slerp(z_a, z_b, t, eps=1e-7):
    """Spherical interpolation (Shoemake 1985), proposed for Gaussian latents by White (2016):

        slerp(a, b; t) = sin((1 - t) w) / sin(w) a + sin(t w) / sin(w) b,
        cos(w) = <a, b> / (|a| |b|),

    over the flattened latents. Unit-norm endpoints give a unit-norm path along the great
    circle; the norm of a Gaussian latent stays near sqrt(d) where a straight line would pass
    through the improbable low-norm interior. Falls back to ``lerp`` when a and b are
    (anti)parallel to within ``eps`` (sin w ~ 0: the arc is undefined or degenerate).
    """
    a, b = jnp.ravel(z_a), jnp.ravel(z_b)
    cos_omega = jnp.dot(a, b) / jnp.maximum(jnp.linalg.norm(a) * jnp.linalg.norm(b), eps)
    omega = jnp.arccos(jnp.clip(cos_omega, -1.0, 1.0))
    sin_omega = jnp.sin(omega)
    degenerate = sin_omega < eps
    safe_sin = jnp.where(degenerate, 1.0, sin_omega)
    weight_a = jnp.where(degenerate, 1.0 - t, jnp.sin((1.0 - t) * omega) / safe_sin)
    weight_b = jnp.where(degenerate, t, jnp.sin(t * omega) / safe_sin)
    return weight_a * z_a + weight_b * z_b


def interpolation_path(z_a, z_b, num_steps, method="slerp"):
    """``num_steps`` latents from ``z_a`` (t = 0) to ``z_b`` (t = 1), equally spaced in t, each
    shaped like z (every leaf gains a leading axis of ``num_steps``). A latent of several groups
    is interpolated as one vector (all groups flattened and joined)."""
    if method not in INTERPOLATIONS:
        raise ValueError(f"method: expected one of {INTERPOLATIONS}, got {method!r}")
    checks.check_count("num_steps", num_steps, 2)
    flat_a, unravel = ravel_pytree(z_a)
    flat_b, _ = ravel_pytree(z_b)
    step = lerp if method == "linear" else slerp
    path = jax.vmap(lambda t: step(flat_a, flat_b, t))(jnp.linspace(0.0, 1.0, num_steps))
    return jax.vmap(unravel)(path)


def interpolate(model, params, x_a, x_b, *, num_steps=8, method="slerp"):
    """(num_steps, H, W, C) in [0, 1]: the likelihood's mean decoded along a path between the
    posterior means of two images (``x_a``, ``x_b`` one example each, in the model's input kind).

    Decoding means (not draws) at the posterior means shows what the latent code carries.
    """
    mean_a, _ = vae_jax.encode(model, params, x_a)
    mean_b, _ = vae_jax.encode(model, params, x_b)
    path = interpolation_path(mean_a, mean_b, num_steps, method)
    return jnp.clip(model.likelihood.mean(vae_jax.decode(model, params, path)), 0.0, 1.0)


def resample_finer(model: HierarchicalModel, params, x, key, *, keep_groups, num_samples=8, temperature=1.0,
                   return_mean=True):  # fmt: skip
    """(num_samples, H, W, C) in [0, 1]: variations of one image ``x`` that keep the top
    ``keep_groups`` latent groups of its posterior path and redraw the finer groups from the prior
    at ``temperature`` (Vahdat & Kautz 2020, Child 2021 show the coarse groups fixing layout and
    the fine ones texture). Every variation shares one posterior draw and gets its own prior draws.
    """
    if model.num_groups < 2:
        raise ValueError(
            f"resample_finer: needs a model of several latent groups (a HierarchicalModel); "
            f"{type(model).__name__} has one, so there is nothing finer to redraw"
        )
    checks.check_count("num_samples", num_samples)
    posterior_key, prior_key, pixel_key = jax.random.split(key, 3)
    xs = jnp.broadcast_to(jnp.asarray(x), (num_samples, *jnp.shape(x)))
    keys = jnp.broadcast_to(posterior_key, (num_samples,))
    prior_keys = jax.random.split(prior_key, num_samples)
    out = model.generate_from(params, xs, keys, keep_groups, temperature, prior_keys=prior_keys)
    if return_mean:
        return jnp.clip(model.likelihood.mean(out), 0.0, 1.0)
    return images_lib.from_model_values(model.likelihood.sample(out, pixel_key), model.likelihood.input_kind)


def _interpolation_rows(model, params, xs, num_steps, method):
    """One interpolation strip per consecutive pair of images, stacked: (pairs * num_steps, H, W, C)."""
    strips = [
        interpolate(model, params, xs[i], xs[i + 1], num_steps=num_steps, method=method) for i in range(xs.shape[0] - 1)
    ]
    return jnp.concatenate(strips)


def _resample_rows(model, params, xs, originals, key, keep_groups, num_steps, max_rows=4):
    """Per image: the image itself, then ``num_steps - 1`` variations keeping ``keep_groups`` groups."""
    rows = []
    for i in range(min(max_rows, xs.shape[0])):
        variations = resample_finer(
            model, params, xs[i], jax.random.fold_in(key, i), keep_groups=keep_groups, num_samples=num_steps - 1
        )
        rows.append(jnp.concatenate([originals[i][None], variations]))
    return jnp.concatenate(rows)


def _samples_file(temperature) -> str:
    return f"samples_t{float(temperature):g}.png"


def _interpolation_file(method) -> str:
    return f"interpolation_{method}.png"


def _resample_file(keep_groups) -> str:
    return f"resample_keep{keep_groups}.png"


def output_files(model, *, temperatures, interpolating: bool, keep_groups=(1,)) -> list[str]:
    """The names of the files ``run_generation`` writes under ``out_dir`` (``interpolating``: it
    is given ``images_uint8``), so a caller can check them all before any work."""
    names = [_samples_file(t) for t in dict.fromkeys(float(t) for t in temperatures)]
    if interpolating:
        names += [_interpolation_file(method) for method in INTERPOLATIONS]
        if model.num_groups > 1:
            names += [_resample_file(groups) for groups in keep_groups]
    return names


def run_generation(
    model,
    params,
    key,
    *,
    out_dir,
    images_uint8=None,
    num_samples=16,
    temperatures=(0.5, 0.7, 0.85, 1.0),
    num_steps=8,
    keep_groups=(1,),
):
    """Write generation PNGs under ``out_dir`` and return a dict of what was written and measured.

    - ``samples_t{T}.png``: a grid of ``num_samples`` samples per temperature (likelihood means);
    - with ``images_uint8`` (uint8 ``(N >= 2, *data_shape)``, e.g. test images):
      ``interpolation_{linear,slerp}.png``, one row of ``num_steps`` per consecutive pair, and,
      for hierarchical models, ``resample_keep{g}.png`` per ``g`` in ``keep_groups`` (each row:
      an image, then variations that keep its first g groups).

    ``output_files`` names them. Every argument is checked before anything is written.
    Returns ``{"files": [...], "temperatures": [...], "sample_pixel_std": {T: float},
    "interpolation_latent_norms": {method: [|z_t| for the first pair]}}``.
    """
    for temperature in temperatures:
        checks.check_finite_positive("temperatures", temperature)
    checks.check_count("num_samples", num_samples)
    if images_uint8 is not None:
        checks.check_count("num_steps", num_steps, 2)
        xs = images_lib.uint8_to_model_input(np.asarray(images_uint8), model.likelihood.input_kind)
        if (
            xs.ndim != len(model.data_shape) + 1
            or xs.shape[0] < 2
            or tuple(xs.shape[1:]) != tuple(model.data_shape)
        ):
            raise ValueError(f"images_uint8: expected (N >= 2, *{model.data_shape}), got {xs.shape}")
    key_samples, key_resample = jax.random.split(key)
    files, report = [], {"temperatures": [float(t) for t in temperatures]}
    grids = sample_grids(model, params, key_samples, num_samples=num_samples, temperatures=temperatures)
    report["sample_pixel_std"] = {t: float(jnp.std(g, axis=0).mean()) for t, g in grids.items()}
    for temperature, samples in grids.items():
        files.append(outputs.save_grid(os.path.join(out_dir, _samples_file(temperature)), samples))
    if images_uint8 is None:
        return {**report, "files": files}

    mean_a, _ = vae_jax.encode(model, params, xs[0])
    mean_b, _ = vae_jax.encode(model, params, xs[1])
    report["interpolation_latent_norms"] = {}
    for method in INTERPOLATIONS:
        path = os.path.join(out_dir, _interpolation_file(method))
        files.append(
            outputs.save_grid(
                path, _interpolation_rows(model, params, xs, num_steps, method), cols=num_steps
            )
        )
        path_latents = interpolation_path(mean_a, mean_b, num_steps, method)
        latents = jax.vmap(lambda z: ravel_pytree(z)[0])(path_latents)
        report["interpolation_latent_norms"][method] = [float(n) for n in jnp.linalg.norm(latents, axis=-1)]
    if model.num_groups > 1:
        originals = images_lib.to_unit(np.asarray(images_uint8))
        for groups in keep_groups:
            rows = _resample_rows(model, params, xs, originals, key_resample, groups, num_steps)
            files.append(
                outputs.save_grid(
                    os.path.join(out_dir, _resample_file(groups)), rows, cols=num_steps
                )
            )
    return {**report, "files": files}
