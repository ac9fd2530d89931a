"""The learned lossy codec as a VAE: the scale hyperprior (Balle et al. 2018) and its mean-scale
variant (Minnen et al. 2018), as pure functions of ``(model, params, x, key)``.

The model. y = g_a(x) (analysis), z = h_a(y) (hyper-analysis); the hyper-latents have a factorized
density p(z~), the latents a Gaussian conditional p(y~ | z~) = N(mu, sigma^2) * U(-1/2, 1/2) with
(mu, sigma) = h_s(z~); the image is x^ = g_s(y~). Quantization is relaxed in training by additive
uniform noise, y~ = y + u, z~ = z + u'.

Why R + lambda D is a negative ELBO. The posterior is a unit box around the analysis output,
q(y~, z~ | x) = U(y - 1/2, y + 1/2) U(z - 1/2, z + 1/2), whose density is 1, so log q = 0 and

    KL(q || p) = E_q[-log p(y~ | z~) - log p(z~)] = the expected rate R (in nats),

and with the likelihood p(x | y~) = N(x; g_s(y~), 1 / (2 lambda') I), -log p(x | y~) =
lambda' ||x - x^||^2 + const: the expected distortion D. So -ELBO = R + lambda' D + const, the
objective here with R in bits per pixel and D the mean squared error on 0..255:

    L = (R_y + R_z) / (H W) + lambda * mean((255 x - 255 x^)^2)

(CompressAI's convention for lambda: its presets' values carry over). At test time the noise is
replaced by rounding, z^ = round(z), y^ = round(y - mu) + mu, and the rate is exactly what an
entropy coder with these masses writes (``vae_jax.apps.lossy``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vae_jax import entropy_models
from vae_jax.networks.hyperprior import (
    HYPER_STRIDE,
    STRIDE,
    Analysis,
    HyperAnalysis,
    HyperSynthesis,
    Synthesis,
)

PAD_MULTIPLE = STRIDE * HYPER_STRIDE  # an image side the two transforms divide exactly


@dataclasses.dataclass(frozen=True)
class HyperpriorCodec:
    """A scale-hyperprior codec (``mean_scale``: Minnen et al.'s mean and scale hyperprior) of
    ``width`` (N) transform channels and ``latent_channels`` (M) latent ones, for images of
    ``num_channels`` channels in [0, 1], NHWC, sides multiples of ``PAD_MULTIPLE``.

    ``data_shape`` is the shape of the training crops (the model is fully convolutional and codes
    any size); ``lmbda`` the rate-distortion trade-off it was trained for."""

    data_shape: tuple[int, int, int] = (64, 64, 3)
    width: int = 64
    latent_channels: int = 96
    mean_scale: bool = False
    dtype: Any = jnp.float32

    @property
    def num_channels(self) -> int:
        return self.data_shape[-1]

    def _networks(self):
        return {
            "analysis": Analysis(self.width, self.latent_channels, dtype=self.dtype),
            "synthesis": Synthesis(self.width, self.num_channels, dtype=self.dtype),
            "hyper_analysis": HyperAnalysis(self.width, signed=self.mean_scale, dtype=self.dtype),
            "hyper_synthesis": HyperSynthesis(self.width, self.latent_channels, with_mean=self.mean_scale, dtype=self.dtype),
        }

    def init(self, key):
        keys = jax.random.split(key, 5)
        side = PAD_MULTIPLE  # the smallest image the transforms take; the parameters fit any size
        x = jnp.zeros((1, side, side, self.num_channels))
        y = jnp.zeros((1, side // STRIDE, side // STRIDE, self.latent_channels))
        z = jnp.zeros((1, side // PAD_MULTIPLE, side // PAD_MULTIPLE, self.width))
        networks = self._networks()
        return {
            "analysis": networks["analysis"].init(keys[0], x)["params"],
            "synthesis": networks["synthesis"].init(keys[1], y)["params"],
            "hyper_analysis": networks["hyper_analysis"].init(keys[2], y)["params"],
            "hyper_synthesis": networks["hyper_synthesis"].init(keys[3], z)["params"],
            "hyper_density": entropy_models.init_factorized(keys[4], self.width),
        }

    def _apply(self, name, params, value):
        return self._networks()[name].apply({"params": params[name]}, value)

    def analysis(self, params, x):
        """y = g_a(x), x in [0, 1] of shape (B, H, W, C)."""
        return self._apply("analysis", params, x).astype(jnp.float32)

    def synthesis(self, params, y_hat):
        """x^ = g_s(y^), unclipped."""
        return self._apply("synthesis", params, y_hat).astype(jnp.float32)

    def hyper_analysis(self, params, y):
        """z = h_a(y) (of |y| for the scale hyperprior)."""
        return self._apply("hyper_analysis", params, y).astype(jnp.float32)

    def hyper_synthesis(self, params, z_hat):
        """(mu, sigma) = h_s(z^): the Gaussian conditional of y (mu = 0 without ``mean_scale``)."""
        return self._apply("hyper_synthesis", params, z_hat)

    # The VAE vocabulary: the posterior's centre and the decoder's mean.
    def encode(self, params, x):
        return self.analysis(params, x)

    def decode(self, params, y_hat):
        return self.synthesis(params, y_hat)


class RateDistortionTerms(NamedTuple):
    """Per image: the latents' and hyper-latents' rates in bits, the squared error summed over
    sub-pixels on 0..255, and the reconstruction x^ in [0, 1] (unclipped)."""

    y_bits: jax.Array
    z_bits: jax.Array
    squared_error: jax.Array
    reconstruction: jax.Array


def _per_image(values):
    return jnp.sum(values.reshape(values.shape[0], -1), axis=-1)


def _terms(model, params, x, y_tilde_of, z_tilde):
    mean, scale = model.hyper_synthesis(params, z_tilde)
    y_tilde = y_tilde_of(mean)
    reconstruction = model.synthesis(params, y_tilde)
    y_bits = _per_image(entropy_models.bits(entropy_models.gaussian_bin_mass(y_tilde, mean, scale)))
    z_bits = _per_image(entropy_models.bits(entropy_models.factorized_bin_mass(params["hyper_density"], z_tilde)))
    squared_error = _per_image(jnp.square(255.0 * (x - reconstruction)))
    return RateDistortionTerms(y_bits, z_bits, squared_error, reconstruction)


def noisy_terms(model: HyperpriorCodec, params, x, key) -> RateDistortionTerms:
    """The training relaxation: y~ = y + u, z~ = z + u', u, u' ~ U(-1/2, 1/2) independent;
    R = -log2 p(y~ | z~) - log2 p(z~), D = ||255 (x - g_s(y~))||^2."""
    y = model.analysis(params, x)
    z = model.hyper_analysis(params, y)
    y_key, z_key = jax.random.split(key)
    z_tilde = z + jax.random.uniform(z_key, z.shape, minval=-0.5, maxval=0.5)
    noise = jax.random.uniform(y_key, y.shape, minval=-0.5, maxval=0.5)
    return _terms(model, params, x, lambda mean: y + noise, z_tilde)


def quantized_latents(model: HyperpriorCodec, params, x):
    """(y^, z^, mu, sigma) as the codec makes them: z^ = round(z), (mu, sigma) = h_s(z^),
    y^ = round(y - mu) + mu."""
    y = model.analysis(params, x)
    z_hat = jnp.round(model.hyper_analysis(params, y))
    mean, scale = model.hyper_synthesis(params, z_hat)
    return jnp.round(y - mean) + mean, z_hat, mean, scale


def quantized_terms(model: HyperpriorCodec, params, x) -> RateDistortionTerms:
    """The rate and distortion of the rounded latents: the codec's estimate (no key, no noise)."""
    y = model.analysis(params, x)
    z_hat = jnp.round(model.hyper_analysis(params, y))
    return _terms(model, params, x, lambda mean: jnp.round(y - mean) + mean, z_hat)


@functools.lru_cache(maxsize=8)
def jitted_quantized_terms(model: HyperpriorCodec):
    """``quantized_terms`` of ``model`` as one jitted function of (params, x), made once per model."""
    return jax.jit(lambda params, x: quantized_terms(model, params, x))


def bits_per_pixel(terms: RateDistortionTerms, num_pixels: int):
    """(R_y + R_z) / (H W) per image."""
    return (terms.y_bits + terms.z_bits) / num_pixels


def mse(terms: RateDistortionTerms, num_subpixels: int):
    """Mean squared error on 0..255 per image."""
    return terms.squared_error / num_subpixels


def psnr(mean_squared_error):
    """10 log10(255^2 / MSE) dB."""
    return 10.0 * jnp.log10(255.0**2 / mean_squared_error)


def rate_distortion_loss(model: HyperpriorCodec, *, lmbda: float):
    """The training loss of (params, uint8 batch, key, step): mean over the batch of
    R / (H W) + lambda MSE_255, with the noisy relaxation; metrics in bits per pixel and dB."""

    def loss_fn(params, batch, key, step):
        del step
        x = batch.astype(jnp.float32) / 255.0
        height, width, channels = x.shape[1:]
        terms = noisy_terms(model, params, x, key)
        rate = bits_per_pixel(terms, height * width)
        distortion = mse(terms, height * width * channels)
        metrics = {
            "bits_per_pixel": jnp.mean(rate),
            "latent_bits_per_pixel": jnp.mean(terms.y_bits) / (height * width),
            "hyper_bits_per_pixel": jnp.mean(terms.z_bits) / (height * width),
            "mse": jnp.mean(distortion),
            "psnr": psnr(jnp.mean(distortion)),
        }
        return jnp.mean(rate + lmbda * distortion), metrics

    return loss_fn


def _sample_factorized(params, key, shape, bound=64):
    """Integer draws of shape (B, h, w, N) from each channel's bin masses on [-bound, bound]."""
    values = jnp.arange(-bound, bound + 1, dtype=jnp.float32)
    channels = shape[-1]
    masses = entropy_models.factorized_bin_mass(params, jnp.broadcast_to(values[:, None], (values.size, channels)))
    logits = jnp.log(masses.T)  # (N, values)
    draws = jax.random.categorical(key, logits[None, None, None], shape=shape)
    return values[draws]


def generate(model: HyperpriorCodec, params, key, *, num_images: int, image_hw: tuple[int, int]):
    """Images drawn from the model's prior: z^ from the factorized masses, y^ = mu +
    round(sigma eps) (exactly the discretized Gaussian the coder uses), x = clip(g_s(y^), 0, 1)."""
    height, width = image_hw
    if height % PAD_MULTIPLE or width % PAD_MULTIPLE:
        raise ValueError(f"image_hw: expected multiples of {PAD_MULTIPLE}, got {image_hw}")
    z_key, y_key = jax.random.split(key)
    z_shape = (num_images, height // PAD_MULTIPLE, width // PAD_MULTIPLE, model.width)
    z_hat = _sample_factorized(params["hyper_density"], z_key, z_shape)
    mean, scale = model.hyper_synthesis(params, z_hat)
    y_hat = mean + jnp.round(jnp.maximum(scale, entropy_models.SCALE_MIN) * jax.random.normal(y_key, mean.shape))
    return jnp.clip(model.synthesis(params, y_hat), 0.0, 1.0)
