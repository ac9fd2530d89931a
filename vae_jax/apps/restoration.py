"""Restoration with the VAE as the prior: denoising and inpainting of whole images of any size.

Denoising is MAP estimation of the clean image x given y = x + sigma * eps under the model's
whole likelihood, in 8-bit pixel units (0..255, relaxed to reals):

    E(x) = sum_i (y_i - x_i)^2 / (2 sigma^2)  -  (1/G) sum_g sum_{tiles t of grid g} log p(x_t | z_t),

G overlapping tile grids (``tiling.OverlappingGrids``: the image's own tiles and the tiles of the
image mirrored by half a tile), so that every pixel's prior term is the average over tilings
whose borders fall in different places: no seams. (``denoise`` by default takes the grids in
turn, one a block of steps, so that a block costs one grid's networks.) ``log p(x_t | z_t)`` is
the likelihood's own log-probability of the continuous x (for a local autoregressive likelihood
every pixel's term reads its actual neighbours in x), counted at the tile pixels inside the image.

Why this minimises -log p(y | x) - log p(x) with p(x) the VAE's marginal: by Fisher's identity
grad_x log p(x) = E_{p(z | x)}[grad_x log p(x | z)]; the scheme takes z_t at the encoder's
posterior mean of the current x (rounded to the model's input) and holds it for a block of Adam
steps on x, then re-encodes. When p(x | z) is Gaussian and linear in z and the encoder is the
exact posterior mean, the fixed point is exactly the MAP (and posterior mean) of x under the
marginal: x - W m(x) - b = s^2 C^-1 (x - b) with C = W W^T + s^2 I (the tests check it).

The run starts from Chambolle's total-variation denoiser of y (``denoising_start``; or from
clip(y), or a blur). On smooth photographs at high noise the run from clip(y) stops with the noise
still in flat regions, as the encoder of a noisy tile codes noise; from the TV image the prior
puts back the detail it supports. Where the TV run's answer comes within its first pass over the
grids (textured images, low noise) the prior had little say, and the default (``start="auto"``)
runs from clip(y) as well.

Where to stop is estimated, not ruled: the MAP itself over-smooths (the error along a run falls,
then rises), so by default (``stopping="sure"``) a twin run on y + eps b, b ~ N(0, I), with its
own re-encodings, gives Stein's unbiased estimate of each block's mean squared error
(``stein.risk``; Ramani, Blu & Unser 2008), and the answer is the block, and the start, of least
estimated risk. ``blend`` then mixes that answer with classical denoisers and y by the weights
of least estimated risk. The older rule (``stopping="discrepancy"``, Morozov 1966) stops at the
first block whose residual mean((y - x)^2) / sigma^2 crosses 1, the value the true image would
give (the previous block's x if it overshot by more than ``DISCREPANCY_OVERSHOOT``). A noise
level that is not given is estimated from y by Donoho & Johnstone's wavelet estimator
(``classical_restoration.estimate_noise_sigma``).

Inpainting minimises the same prior term over the unknown pixels only, x = where(known, image,
free), from the biharmonic fill; the number of blocks is chosen on known pixels held out of a
first run (``inpaint``'s ``stopping="validation"``): the known pixels come back exactly.

Images here are float32 in [0, 1] (noisy ones may leave it); masks are boolean, True where a
pixel is known, ``(H, W)`` or ``(H, W, C)``. ``denoise`` and ``inpaint`` take a ``progress``
callback (called with 1 after each block) for a progress bar.
"""

from __future__ import annotations

import os
import time
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vae_jax import checks, outputs
from vae_jax import images as images_lib
from vae_jax.apps import classical_restoration as classical
from vae_jax.apps import stein, tiling
from vae_jax.apps.classical_restoration import broadcast_mask, mean_fill  # noqa: F401  (part of this API)

PIXEL_MAX = 255.0
# The residual may pass 1 inside a block; past this, the block before is the closer answer.
DISCREPANCY_OVERSHOOT = 1.02


# ---------------------------------------------------------------- degradations and scores


def add_gaussian_noise(images, sigma, key):
    """y = x + sigma * eps, eps ~ N(0, I); not clipped, so the noise model stays exact."""
    return images + sigma * jax.random.normal(key, jnp.shape(images))


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


# ---------------------------------------------------------------- the energy


def relaxed_model_input(pixels, input_kind):
    """Continuous 0..255 pixels in the likelihood's input units, unrounded: ``discrete`` the
    values themselves, every other kind pixels / 255."""
    return pixels if input_kind == "discrete" else pixels / PIXEL_MAX


def prior_log_prob(model, grids, pixels, outs):
    """(1/G) sum_g sum_t sum_{ij inside the image} log p(x_t,ij | z_t, ...) of the 0..255 image
    ``pixels`` (H, W, C), ``outs`` the decoder outputs of ``tiling.grid_tiles``'s tiles."""
    tiles = tiling.grid_tiles(grids, pixels)
    # The contract's log_prob: one number a pixel, every term of its context (neighbours in x) included.
    log_p = model.likelihood.log_prob(relaxed_model_input(tiles, model.likelihood.input_kind), outs)
    return jnp.sum(jnp.where(tiling.inside(grids), log_p, 0.0)) / len(grids.shifts)


def denoising_energy(model, grids, pixels, noisy, sigma, outs):
    """E(x) = sum (y - x)^2 / (2 sigma^2) - prior_log_prob(x), everything in 0..255 units."""
    return 0.5 * jnp.sum(jnp.square(noisy - pixels)) / sigma**2 - prior_log_prob(model, grids, pixels, outs)


def inpainting_energy(model, grids, free, image, known, outs):
    """E(u) = -prior_log_prob(where(known, image, u)): only the unknown pixels u move it."""
    return -prior_log_prob(model, grids, jnp.where(known, image, free), outs)


def decoded_posterior_means(model, params, grids, pixels):
    """p(x | z)'s parameters of every grid tile at z = the posterior mean of round(clip(x))."""
    tiles = tiling.grid_tiles(grids, jnp.clip(pixels, 0.0, PIXEL_MAX)) / PIXEL_MAX
    mean, _ = model.posterior(params, images_lib.to_model_input(tiles, model.likelihood.input_kind))
    return model.decoder_output(params, mean)


def _adam_steps(energy, x, state, steps, learning_rate):
    """``steps`` Adam steps on ``energy`` from ``x``; returns (x, state, energy before each step)."""
    optimiser = optax.adam(learning_rate)

    def step(carry, _):
        x, state = carry
        value, grad = jax.value_and_grad(energy)(x)
        updates, state = optimiser.update(grad, state, x)
        return (optax.apply_updates(x, updates), state), value

    (x, state), values = jax.lax.scan(step, (x, state), None, length=steps)
    return x, state, values


@partial(jax.jit, static_argnames=("model", "grids", "steps", "learning_rate"))
def _denoising_block(model, params, pixels, state, noisy, sigma, *, grids, steps, learning_rate):
    """Re-encode, then ``steps`` Adam steps on E with z held, for each of the runs stacked on the
    leading axis of ``pixels`` and ``noisy`` (a run and, for SURE, its twin on a perturbed y), each
    with its own z; returns (x, state, each run's residual mean((y - clip(x))^2) / sigma^2)."""
    runs = range(pixels.shape[0])
    outs = [decoded_posterior_means(model, params, grids, pixels[run]) for run in runs]
    # A sum of independent energies: the gradient of each run is its own (a Python sum, as vmap
    # over the likelihood ran several times slower on CPU).
    energy = lambda x: sum(denoising_energy(model, grids, x[run], noisy[run], sigma, outs[run]) for run in runs)
    pixels, state, _ = _adam_steps(energy, pixels, state, steps, learning_rate)
    residuals = jnp.mean(jnp.square(noisy - jnp.clip(pixels, 0.0, PIXEL_MAX)), axis=(1, 2, 3)) / sigma**2
    return pixels, state, residuals


@partial(jax.jit, static_argnames=("model", "grids", "steps"))
def _inpainting_block(model, params, free, state, image, known, *, grids, steps, learning_rate):
    outs = decoded_posterior_means(model, params, grids, jnp.where(known, image, free))
    energy = lambda u: inpainting_energy(model, grids, u, image, known, outs)
    free, state, values = _adam_steps(energy, free, state, steps, learning_rate)
    return free, state, values[-1]


# ---------------------------------------------------------------- denoising and inpainting


class Denoised(NamedTuple):
    """``image``: (H, W, C) in [0, 1]. ``sigma``: the noise level used (on [0, 1]),
    ``sigma_estimated`` whether it was estimated from the image; ``residuals``: the discrepancy
    mean((y - x)^2) / sigma^2 after each block run; ``risks``: with ``stopping="sure"``, Stein's
    estimate of the mean squared error on [0, 1] of the start (first) and of each block's x
    (empty with the discrepancy principle); ``iterations``: the blocks whose result it is (0: the
    start itself); ``start``: the ``denoising_start`` the answer came from; ``twin_image``: with
    SURE, the twin run's x at the same block (the denoiser at y + eps b, for ``blend``), else None;
    ``stopping``: the rule that chose the answer (``"discrepancy"`` also where SURE was asked for
    but gave an impossible, negative risk, whose ``risks`` are kept)."""

    image: jax.Array
    sigma: float
    sigma_estimated: bool
    residuals: tuple[float, ...]
    iterations: int
    start: str
    risks: tuple[float, ...] = ()
    twin_image: jax.Array | None = None
    stopping: str = "sure"


def _check_image(model, name, image):
    if jnp.ndim(image) != 3 or jnp.shape(image)[-1] != model.data_shape[-1]:
        raise ValueError(f"{name}: expected an (H, W, {model.data_shape[-1]}) image, got {jnp.shape(image)}")
    image = jnp.asarray(image, jnp.float32)
    if not bool(jnp.all(jnp.isfinite(image))):
        raise ValueError(f"{name}: expected finite pixel values, got NaN or infinity")
    return image


def _check_schedule(steps, iterations_name, iterations, learning_rate):
    checks.check_count("steps", steps)
    checks.check_count(iterations_name, iterations)
    checks.check_finite_positive("learning_rate", learning_rate)


DENOISING_STARTS = ("noisy", "total_variation", "gaussian_blur")
STARTS = ("auto", *DENOISING_STARTS)
STOPPING = ("sure", "discrepancy")
# The twin's y is y + SURE_EPSILON * b, on [0, 1]: 1.5 of the encoder's 8-bit levels. Steps much
# under a level see its input's rounding and Adam's sign-like moves as a rough divergence (at 0.15
# levels the risk wandered by 20% of the MSE on a chelsea crop at sigma 15); steps of several
# levels leave the denoiser's linear range (at 5 levels, sigma 50, the risk of the TV start came
# out negative).
SURE_EPSILON = 1.5 / PIXEL_MAX
# Blocks without a new minimum of the smoothed risk before a run stops. One probe's estimate
# wanders by 10-20% of the MSE block to block on a slowly improving run (LadyBird, sigma 50, from
# TV: at 2 blocks without smoothing the run stopped at block 7 of a descent that lasts 25).
SURE_PATIENCE = 3


def smoothed_risks(risks) -> list[float]:
    """Each block's risk averaged with its neighbours' (the start, block 0, with block 1's): the
    true error changes smoothly from block to block, one probe's estimate of it does not."""
    return [float(np.mean(risks[max(0, j - 1) : j + 2])) for j in range(len(risks))]


def denoising_start(noisy, sigma, start):
    """The x a MAP run starts from, in [0, 1]: clip(y), Chambolle's TV denoiser, or a Gaussian blur."""
    checks.check_choice("start", start, DENOISING_STARTS)
    if start == "total_variation":
        return jnp.clip(jnp.asarray(classical.total_variation(noisy, sigma)), 0.0, 1.0)
    if start == "gaussian_blur":
        return jnp.clip(classical.gaussian_blur(jnp.clip(noisy, 0.0, 1.0)), 0.0, 1.0)
    return jnp.clip(noisy, 0.0, 1.0)


def denoise(model, params, noisy, sigma=None, *, key=None, stopping="sure", num_grids=2, cycle_grids=True, steps=10,
            max_iterations=25, learning_rate=2.0, target_discrepancy=1.0, start="auto", progress=None) -> Denoised:  # fmt: skip
    """The MAP estimate of x given ``noisy`` y = x + sigma * eps, (H, W, C) on [0, 1], any size
    (an image smaller than a tile is mirrored up to one), stopped early where the risk is least.

    Minimises E(x) (module docstring) by Adam (``learning_rate`` in 0..255 units) from ``start``
    (``denoising_start``), re-encoding every ``steps`` steps, for at most ``max_iterations``
    blocks. ``sigma`` None: estimated from y by the wavelet MAD estimator (Donoho & Johnstone 1994).

    ``stopping="sure"`` (needs ``key``, which draws the probe b): a twin run on y + eps * b (eps =
    ``SURE_EPSILON``, its own re-encodings) gives Stein's unbiased estimate of each
    block's mean squared error (``stein.risk``); the answer is the block (or the start)
    of least estimated risk (``smoothed_risks``: each averaged with its neighbours'), and the run
    stops ``SURE_PATIENCE`` blocks after it. Each block costs
    two runs' networks. A negative estimate (no mean squared error is) says the difference
    quotient failed on this image: the answer is then the discrepancy rule's (``stopping`` says
    so). ``"discrepancy"``: Morozov's rule (module docstring) with ``target_discrepancy`` (None:
    never stop early; the run is the plain MAP), no twin.

    ``cycle_grids``: each block's prior term is one of the ``num_grids`` grids in turn (block k
    uses grid k mod G), so the grids are averaged over blocks rather than within each; a block
    then costs one grid's networks. False: every block uses the average over all G grids, E(x) as written.

    ``start="auto"``: from the TV denoiser's image, unless that run's answer comes within the
    first pass over the grids (one block, or ``num_grids`` cycled ones; by the discrepancy rule,
    accepted there): the prior then had little say, as on textured photographs at low noise, and
    the run is repeated from clip(y). With SURE the lower estimated risk of the two is the answer;
    with the discrepancy rule the second run's.
    """
    noisy = _check_image(model, "noisy", noisy)
    _check_schedule(steps, "max_iterations", max_iterations, learning_rate)
    checks.check_choice("start", start, STARTS)
    checks.check_choice("stopping", stopping, STOPPING)
    if stopping == "sure" and key is None:
        raise ValueError("key: SURE stopping draws a random probe; give a jax.random key (or stopping='discrepancy')")
    estimated = sigma is None
    sigma = classical.estimate_noise_sigma(noisy) if estimated else sigma
    checks.check_finite_positive("sigma", sigma)
    if stopping == "discrepancy" and target_discrepancy is not None:
        checks.check_finite_positive("target_discrepancy", target_discrepancy)
    probe = stein.probe(key, noisy.shape) if stopping == "sure" else None
    run = partial(_map_from, model, params, noisy, sigma, estimated, num_grids=num_grids, cycle_grids=cycle_grids,
                  steps=steps, max_iterations=max_iterations, learning_rate=learning_rate,
                  target_discrepancy=target_discrepancy, progress=progress)  # fmt: skip
    result = _from_start(run, probe, start, num_grids if cycle_grids else 1, max_iterations, target_discrepancy)
    if probe is not None and min(result.risks) < 0:
        # A negative mean squared error: the difference quotient left the denoiser's linear range.
        fallback = _from_start(run, None, start, num_grids if cycle_grids else 1, max_iterations, target_discrepancy)
        return fallback._replace(risks=result.risks)
    return result


def _from_start(run, probe, start, first_pass, max_iterations, target_discrepancy) -> Denoised:
    """``denoise``'s choice of start: ``run(start, probe=...)`` once, or for ``"auto"`` from TV and,
    where that run answered within ``first_pass`` blocks (cycled grids: the prior's first say over
    each grid), from clip(y) too."""
    run = partial(run, probe=probe)
    if start != "auto":
        return run(start)
    smoothed = run("total_variation")
    # The discrepancy rule's run ended by a block of the first pass (the answer may be the one before).
    answered = smoothed.iterations if probe is not None else len(smoothed.residuals)
    stops_early = probe is not None or target_discrepancy is not None
    if not (stops_early and answered <= first_pass and max_iterations > first_pass):
        return smoothed
    from_noisy = run("noisy")
    if probe is None:
        return from_noisy
    return min(smoothed, from_noisy, key=lambda result: min(result.risks))


BLENDABLE = {
    "non_local_means": classical.non_local_means,
    "total_variation": classical.total_variation,
    "bm3d": classical.bm3d,
}


class Blended(NamedTuple):
    """``image``: the blend, (H, W, C) in [0, 1]; ``weights`` and ``risks``: each candidate's weight and
    own estimated risk (MSE on [0, 1]), by name (``vae_map``, the classical denoisers, ``noisy``);
    ``risk``: the blend's; ``denoised``: the MAP run it blends."""

    image: jax.Array
    weights: dict
    risk: float
    risks: dict
    denoised: Denoised


def blend(model, params, noisy, sigma=None, *, key, with_denoisers=("non_local_means",), **options) -> Blended:
    """The VAE's MAP blended with classical denoisers and y itself by the weights of least
    estimated risk (``stein.least_risk_blend``):

        x = w_0 MAP(y) + sum_k w_k f_k(y) + w_y y,   w = argmin SURE(x),

    ``MAP`` = ``denoise`` (SURE stopping, with ``key`` and ``options``), f_k the ``with_denoisers``
    (names in ``BLENDABLE``; ``bm3d`` needs the optional package). SURE-LET (Luisier, Blu &
    Unser 2007) builds denoisers this way; here the blend adds what the classical ones see
    (non-local repetition) and the tile prior does not. ``blend_denoised`` is the second half.
    """
    for name in with_denoisers:
        checks.check_choice("with_denoisers", name, tuple(BLENDABLE))
    denoised = denoise(model, params, noisy, sigma, key=key, stopping="sure", **options)
    return blend_denoised(denoised, noisy, key, with_denoisers)


def blend_denoised(denoised: Denoised, noisy, key, with_denoisers=("non_local_means",)) -> Blended:
    """``blend`` of a ``denoise`` result (SURE stopping, the same ``key``) of ``noisy``. Each
    divergence is the difference quotient along denoise's probe b: the MAP's from its twin run,
    each classical f_k's from one more run on y + eps b. Where the MAP was not chosen by SURE
    (``denoised.stopping``), the answer is the MAP alone, its risk NaN.
    """
    for name in with_denoisers:
        checks.check_choice("with_denoisers", name, tuple(BLENDABLE))
    if denoised.stopping != "sure":  # no twin, or SURE's estimates were impossible: the MAP alone
        risks = {"vae_map": float("nan")}
        return Blended(denoised.image, {"vae_map": 1.0}, float("nan"), risks, denoised)
    noisy = jnp.asarray(noisy, jnp.float32)
    direction = stein.probe(key, noisy.shape)  # the probe ``denoise`` drew
    epsilon = SURE_EPSILON
    perturbed_noisy = noisy + epsilon * direction
    candidates = {"vae_map": (denoised.image, denoised.twin_image)}
    for name in with_denoisers:
        run = BLENDABLE[name]
        candidates[name] = (run(noisy, denoised.sigma), run(perturbed_noisy, denoised.sigma))
    candidates["noisy"] = (noisy, perturbed_noisy)
    result = stein.least_risk_blend(
        noisy, [c[0] for c in candidates.values()], [c[1] for c in candidates.values()], direction, epsilon,
        denoised.sigma,
    )  # fmt: skip
    image = jnp.clip(jnp.asarray(result.estimate, jnp.float32), 0.0, 1.0)
    weights = {name: float(w) for name, w in zip(candidates, result.weights)}
    risks = {name: float(r) for name, r in zip(candidates, result.risks)}
    return Blended(image, weights, result.risk, risks, denoised)


def block_grids(grids: tiling.OverlappingGrids, cycle: bool) -> list[tiling.OverlappingGrids]:
    """The grids of successive blocks, repeated in turn: each grid on its own when ``cycle``, else all together."""
    if not cycle:
        return [grids]
    return [tiling.OverlappingGrids(grids.image_hw, grids.tile_hw, (shift,)) for shift in grids.shifts]


class _Stop(NamedTuple):
    """After a block: whether the run ends, and which x (the latest or the one before it) is the answer."""

    now: bool
    take_previous: bool = False


def _discrepancy_stop(residuals, target, from_above) -> _Stop:
    """Morozov's rule: the first residual past ``target`` from the start's side ends the run; the
    block before is the answer if this one overshot by more than ``DISCREPANCY_OVERSHOOT``."""
    if target is None or not (residuals[-1] <= target if from_above else residuals[-1] >= target):
        return _Stop(False)
    ratio = residuals[-1] / target
    return _Stop(True, max(ratio, 1 / max(ratio, 1e-12)) > DISCREPANCY_OVERSHOOT and len(residuals) > 1)


def _map_from(model, params, noisy, sigma, estimated, start, *, probe, num_grids, cycle_grids, steps, max_iterations,
              learning_rate, target_discrepancy, progress) -> Denoised:  # fmt: skip
    """``denoise`` from one ``denoising_start``, its arguments checked; ``probe`` None: the discrepancy rule."""
    schedule = block_grids(tiling.overlapping_grids(noisy.shape[:2], model.data_shape[:2], num_grids), cycle_grids)
    sure = probe is not None
    epsilon = SURE_EPSILON
    runs_noisy = jnp.stack([noisy, noisy + epsilon * probe]) if sure else noisy[None]
    y = PIXEL_MAX * runs_noisy
    pixels = PIXEL_MAX * jnp.stack([denoising_start(run_noisy, sigma, start) for run_noisy in runs_noisy])
    state = optax.adam(learning_rate).init(pixels)
    sigma_pixels = jnp.float32(PIXEL_MAX * sigma)

    def risk(x):  # on [0, 1]
        images = jnp.clip(x, 0.0, PIXEL_MAX) / PIXEL_MAX
        return float(stein.risk(noisy, images[0], images[1], probe, epsilon, sigma))

    # A smoothed start is further from y than the noise is; its residual falls to the target.
    from_above = target_discrepancy is not None and float(
        jnp.mean(jnp.square(y[0] - pixels[0])) / sigma_pixels**2) > target_discrepancy  # fmt: skip
    residuals, risks = [], [risk(pixels)] if sure else []
    best, previous = (pixels, 0), pixels
    # With SURE: the x of the least smoothed risk among blocks whose smoothed risk is final (both
    # neighbours known), and the last two blocks' x, whose smoothed risks may still change.
    settled, recent = (pixels, 0), {0: pixels}
    for block in range(max_iterations):
        previous = pixels
        pixels, state, block_residuals = _denoising_block(
            model, params, pixels, state, y, sigma_pixels, grids=schedule[block % len(schedule)], steps=steps,
            learning_rate=learning_rate,
        )  # fmt: skip
        residuals.append(float(block_residuals[0]))
        if progress is not None:
            progress(1)
        if sure:
            risks.append(risk(pixels))
            recent[block + 1] = pixels
            smooth = smoothed_risks(risks)
            final = block  # the last block whose neighbours are both in (always held in recent)
            if smooth[final] < smooth[settled[1]]:
                settled = (recent[final], final)
            recent = {j: x for j, x in recent.items() if j >= final}
            best = min([settled, *((x, j) for j, x in recent.items())], key=lambda pair: smooth[pair[1]])
            if block + 1 - best[1] >= SURE_PATIENCE:
                break
        else:
            best = (pixels, block + 1)
            stop = _discrepancy_stop(residuals, target_discrepancy, from_above)
            if stop.now:
                best = (previous, block) if stop.take_previous else best
                break
    pixels, iterations = best
    images = jnp.clip(pixels, 0.0, PIXEL_MAX) / PIXEL_MAX
    twin, rule = (images[1], "sure") if sure else (None, "discrepancy")
    return Denoised(images[0], float(sigma), estimated, tuple(residuals), iterations, start, tuple(risks), twin, rule)


FILLS = ("biharmonic", "mean")


INPAINT_STOPPING = ("validation", "fixed")
# The share of known pixels the validation run hides; blocks without a new least error before it stops.
VALIDATION_FRACTION = 0.05
VALIDATION_PATIENCE = 2
# Adam's first steps move every pixel by about the learning rate whatever its gradient (m/sqrt(v) is
# near +-1), which took the fill down (LadyBird's centre hole, -0.06 dB after one block at 2.0);
# so the first blocks run at lr / 2^k, k counting down to 0 at this block.
INPAINT_WARMUP_BLOCKS = 2


class Inpainted(NamedTuple):
    """``image``: (H, W, C) in [0, 1], known pixels exact; ``iterations``: its blocks (0: the start
    fill itself); ``validation_errors``: with validation stopping, the mean squared error on [0, 1]
    at the held-out known pixels of the fill (first) and of each block (else empty)."""

    image: jax.Array
    iterations: int
    validation_errors: tuple[float, ...] = ()


def inpaint(model, params, image, mask, *, key=None, stopping="validation", num_grids=2, steps=10, iterations=10,
            learning_rate=2.0, start="biharmonic", progress=None) -> Inpainted:  # fmt: skip
    """Fill the unknown pixels (``mask`` False) of an (H, W, C) [0, 1] image: argmin over them of
    -(1/G) sum_g sum_t log p(x_t | z_t), x = where(known, image, free), by blocks of ``steps`` Adam
    steps (re-encoding before each), from the ``start`` fill (``"biharmonic"`` or ``"mean"``), the
    first ``INPAINT_WARMUP_BLOCKS`` at ``learning_rate / 4, / 2``. Known pixels come back exactly.

    ``stopping="validation"`` (needs ``key``): a first run hides the ``validation_pixels`` (the
    known pixels nearest the unknown ones) and scores each block by its error there; the answer is
    a run on the whole mask for the number of blocks (0 to ``iterations``) that scored best, so the
    fill comes back unchanged where the prior does not improve it. ``"fixed"``: ``iterations``
    blocks, one run.
    """
    image = _check_image(model, "image", image)
    mask = broadcast_mask(mask, image.shape)
    _check_schedule(steps, "iterations", iterations, learning_rate)
    checks.check_choice("start", start, FILLS)
    checks.check_choice("stopping", stopping, INPAINT_STOPPING)
    if stopping == "validation" and key is None:
        raise ValueError("key: validation stopping draws the held-out pixels; give a jax.random key (or stopping='fixed')")
    run = partial(_inpainting_run, model, params, image, num_grids=num_grids, steps=steps,
                  learning_rate=learning_rate, start=start, progress=progress)  # fmt: skip
    if stopping == "fixed":
        return run(mask, iterations)
    held_out = jnp.broadcast_to(validation_pixels(mask, key)[..., None], mask.shape)
    if not bool(jnp.any(held_out)):  # nothing unknown, or too small an image to hold any pixel out
        return run(mask, iterations)
    validation = run(mask & ~held_out, iterations, held_out=held_out)
    best = int(np.argmin(validation.validation_errors))
    return run(mask, best)._replace(validation_errors=validation.validation_errors)


def validation_pixels(mask, key, fraction=VALIDATION_FRACTION) -> jax.Array:
    """The (H, W) pixels inpainting's validation hides: the ``fraction`` of the known pixels (every
    channel known) nearest an unknown one, by Euclidean distance, ties broken at random by ``key``.

    Held-out pixels should be unknown pixels' peers: for a random mask nearly every known pixel
    touches an unknown one, so these are a random draw; for a hole they are a ring around it, the
    hole made larger, where scattered pixels would judge the fill by pixels with known neighbours on
    every side. Empty when no pixel is unknown.
    """
    from scipy import ndimage

    known = np.asarray(mask).reshape(np.shape(mask)[:2] + (-1,)).all(axis=-1)
    count = round(fraction * int(known.sum()))
    if known.all() or count == 0:
        return jnp.zeros(known.shape, bool)
    distance = ndimage.distance_transform_edt(known)
    tie_break = np.asarray(jax.random.uniform(key, known.shape))
    order = np.lexsort((tie_break.ravel(), np.where(known, distance, np.inf).ravel()))
    held_out = np.zeros(known.size, bool)
    held_out[order[:count]] = True
    return jnp.asarray(held_out.reshape(known.shape))


def _inpainting_run(model, params, image, mask, blocks, *, num_grids, steps, learning_rate, start, progress,
                    held_out=None) -> Inpainted:  # fmt: skip
    """``blocks`` blocks from the fill of ``mask`` (checked arguments); with ``held_out``, each
    block's error there, stopping ``VALIDATION_PATIENCE`` blocks after the least."""
    fill = classical.biharmonic_fill if start == "biharmonic" else classical.mean_fill
    grids = tiling.overlapping_grids(image.shape[:2], model.data_shape[:2], num_grids)
    known_pixels = PIXEL_MAX * image
    free = PIXEL_MAX * jnp.asarray(fill(image, mask), jnp.float32)
    state = optax.adam(learning_rate).init(free)

    def filled(free):
        return jnp.where(mask, image, jnp.clip(free, 0.0, PIXEL_MAX) / PIXEL_MAX)

    def held_out_error(free):
        return float(jnp.sum(jnp.where(held_out, jnp.square(filled(free) - image), 0.0)) / jnp.sum(held_out))

    errors = [held_out_error(free)] if held_out is not None else []
    best = (free, 0)
    for block in range(blocks):
        free, state, _ = _inpainting_block(
            model, params, free, state, known_pixels, mask, grids=grids, steps=steps,
            learning_rate=learning_rate / 2.0 ** max(INPAINT_WARMUP_BLOCKS - block, 0),
        )
        if progress is not None:
            progress(1)
        if held_out is None:
            best = (free, block + 1)
            continue
        errors.append(held_out_error(free))
        if errors[-1] < errors[best[1]]:
            best = (free, block + 1)
        if block + 1 - best[1] >= VALIDATION_PATIENCE:
            break
    return Inpainted(filled(best[0]), best[1], tuple(errors))


# ---------------------------------------------------------------- every method side by side


def default_blend() -> tuple[str, ...]:
    """The classical denoisers ``blend`` takes by default: non-local means, and BM3D when installed."""
    return ("non_local_means", "bm3d") if classical.bm3d_available() else ("non_local_means",)


def denoisers(model, params, sigma, key, *, blur_sigma=1.0, blends=None, **options) -> dict:
    """The denoisers scored side by side, ``{name: noisy -> image}``: the noisy input itself, the
    classical ones (BM3D when installed), the VAE's MAP (``denoise`` with ``key`` and ``options``)
    and, with SURE stopping, its blends: ``blends`` maps a name to ``with_denoisers`` (default
    ``{"vae_blend": default_blend()}``), each ``blend_denoised`` of the ``vae_map`` run, which
    must run first (``timed_scores`` keeps this order; ``charge_blends`` adds its time to theirs)."""
    methods = {
        "noisy": lambda y: jnp.clip(y, 0.0, 1.0),
        "gaussian_blur": lambda y: classical.gaussian_blur(jnp.clip(y, 0.0, 1.0), blur_sigma),
        "total_variation": lambda y: classical.total_variation(y, sigma),
        "non_local_means": lambda y: classical.non_local_means(y, sigma),
    }
    if classical.bm3d_available():
        methods["bm3d"] = lambda y: classical.bm3d(y, sigma)
    kept = {}

    def vae_map(y):
        kept["denoised"] = denoise(model, params, y, sigma, key=key, **options)
        return kept["denoised"].image

    methods["vae_map"] = vae_map
    if options.get("stopping", "sure") == "sure":
        for name, with_denoisers in ({"vae_blend": default_blend()} if blends is None else blends).items():
            methods[name] = partial(lambda y, w: blend_denoised(kept["denoised"], y, key, w).image, w=with_denoisers)
    return methods


BLEND_PREFIX = "vae_blend"


def charge_blends(scores, map_name="vae_map") -> dict:
    """``timed_scores``'s scores with each blend's (``vae_blend*``) seconds made to include the MAP
    run it blends."""
    for name in scores:
        if name.startswith(BLEND_PREFIX):
            scores[name]["seconds"] += scores[map_name]["seconds"]
    return scores


def inpainters(model, params, key, **options) -> dict:
    """The inpainters scored side by side, ``{name: (image, mask) -> image}``; the VAE's is
    ``inpaint`` with ``key`` and ``options``."""
    return {
        "masked": lambda x, m: jnp.where(broadcast_mask(m, x.shape), x, 0.0),
        "mean_fill": classical.mean_fill,
        "biharmonic": classical.biharmonic_fill,
        "vae_map": lambda x, m: inpaint(model, params, x, m, key=key, **options).image,
    }


def timed_scores(methods, clean, *inputs) -> tuple[dict, dict]:
    """Run each method on ``inputs``: ({name: {"psnr", "ssim", "seconds"}}, {name: image})."""
    scores, restored = {}, {}
    for name, method in methods.items():
        started = time.perf_counter()
        image = jnp.clip(jnp.asarray(method(*inputs), jnp.float32), 0.0, 1.0).block_until_ready()
        seconds = time.perf_counter() - started
        restored[name] = image
        scores[name] = {"psnr": float(psnr(image, clean)), "ssim": float(ssim(image, clean)), "seconds": seconds}
    return scores, restored


def best_method(scores, exclude=("noisy", "masked")) -> str:
    """The method of highest PSNR among ``scores`` (the degraded input itself excluded)."""
    return max((name for name in scores if name not in exclude), key=lambda name: scores[name]["psnr"])


TASKS = ("denoise", "inpaint_centre", "inpaint_random")


def output_files(tasks=TASKS) -> list[str]:
    """The files ``run_restoration`` writes under ``out_dir`` for ``tasks``: a row of every method
    (``{task}.png``) and the answer, the best method's image (``{task}_answer.png``)."""
    return [name for task in tasks for name in (f"{task}.png", f"{task}_answer.png")]


def restoration_report(model, params, image_uint8, key, *, tasks=TASKS, noise_sigma=0.1, steps=10,
                       max_iterations=25, iterations=10, start="auto", stopping="sure", progress=None):  # fmt: skip
    """Degrade ``image_uint8`` (uint8 ``(H, W, C)``, any size), restore it every way, score everything.

    Returns ``(report, images)``: ``report[task]`` maps each method to ``{"psnr", "ssim",
    "seconds"}`` against the clean image and ``report[task + "_answer"]`` names the best one;
    ``images[task]`` maps ``"clean"`` and each method to its (H, W, C) [0, 1] image. Denoising adds
    noise of ``noise_sigma`` and gives the denoisers that sigma (``max_iterations`` caps the VAE's
    blocks, ``start`` and ``stopping`` are ``denoise``'s); inpainting runs at most ``iterations``
    blocks, chosen by validation. Both take ``steps`` Adam steps a block and call ``progress(1)``
    after each.
    """
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"tasks: expected denoise, inpaint_centre or inpaint_random, got {sorted(unknown)}")
    if "denoise" in tasks:
        checks.check_finite_positive("noise_sigma", noise_sigma)
    clean = jnp.asarray(images_lib.to_unit(np.asarray(image_uint8)))
    _check_image(model, "image_uint8", clean)
    noise_key, mask_key, probe_key, validation_key = jax.random.split(key, 4)
    report, results = {}, {}
    if "denoise" in tasks:
        noisy = add_gaussian_noise(clean, noise_sigma, noise_key)
        methods = denoisers(
            model, params, noise_sigma, probe_key, steps=steps, max_iterations=max_iterations, start=start,
            stopping=stopping, progress=progress,
        )  # fmt: skip
        scores, restored = timed_scores(methods, clean, noisy)
        report["denoise"] = charge_blends(scores)
        results["denoise"] = {"clean": clean, **restored}
        report["noise_sigma"] = noise_sigma
    for task in (t for t in tasks if t.startswith("inpaint_")):
        if task == "inpaint_centre":
            mask = centre_square_mask(clean.shape[:2])
        else:
            mask = random_pixel_mask(clean.shape[:2], mask_key)
        methods = inpainters(model, params, validation_key, steps=steps, iterations=iterations, progress=progress)
        report[task], restored = timed_scores(methods, clean, clean, mask)
        results[task] = {"clean": clean, **restored}
    for task in results:
        report[f"{task}_answer"] = best_method(report[task])
    return report, results


def run_restoration(model, params, image_uint8, key, *, out_dir, **options):
    """``restoration_report``, writing ``output_files`` under ``out_dir``; returns its numbers
    plus ``"files"`` and each row's ``"columns"``."""
    report, results = restoration_report(model, params, image_uint8, key, **options)
    files, columns = [], {}
    for task, restored in results.items():
        columns[task] = list(restored)
        row = jnp.stack(list(restored.values()))
        files.append(outputs.save_grid(os.path.join(out_dir, f"{task}.png"), row, cols=len(restored)))
        answer = restored[report[f"{task}_answer"]]
        files.append(outputs.save_grid(os.path.join(out_dir, f"{task}_answer.png"), answer[None], cols=1))
    return {**report, "files": files, "columns": columns}

