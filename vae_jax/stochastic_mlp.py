"""Stacked stochastic layers of Gaussian units with MLPs between them: the VAE and IWAE models
of Burda, Grosse & Salakhutdinov (2015, sec. 5), with inference bottom-up and generation top-down:

  q(z | x) = q(z_1 | x) q(z_2 | z_1) ... q(z_L | z_{L-1}),
  p(x, z)  = p(z_L) p(z_{L-1} | z_L) ... p(z_1 | z_2) p(x | z_1),

every conditional a diagonal Gaussian (or, for x, the model's likelihood) whose parameters an
MLP of ``depth`` tanh layers computes from the layer before it. Between x and z_1 the hidden
layers have ``widths[0]`` units, between z_l and z_{l+1} ``widths[l]``, in both directions. A
Gaussian head outputs a mean and a log standard deviation (sigma = exp(linear), as the paper's
code parameterises it), with no clamp; weights start from Glorot & Bengio's (2010) uniform
heuristic, biases at zero.

With one stochastic layer this is the familiar VAE with a deeper MLP. ``kl_groups`` lists the
layers top-down (index 0 is z_L). The top layer's KL given z_{L-1} is analytic against the
standard-normal prior; below it p(z_l | z_{l+1}) depends on a z_{l+1} drawn after z_l, so
those terms are the one-sample estimates log q(z_l | z_{l-1}) - log p(z_l | z_{l+1}).

PRNG: layer l of example e draws with ``fold_in(keys[e], l)`` (l = 0 is z_1), in inference and
generation alike.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import distributions as dist
from vae_jax import priors as priors_lib
from vae_jax.likelihoods import Bernoulli, Likelihood
from vae_jax.model import LatentTerms, encoder_input
from vae_jax.networks.activations import accumulation_dtype, activation
from vae_jax.priors import StandardNormal

GLOROT_UNIFORM = nn.initializers.glorot_uniform()


class GaussianMLP(nn.Module):
    """u -> ``depth`` Dense+activation layers of ``width`` -> (mean, log_var) of ``size`` units,
    log_var = 2 * log_sigma with log_sigma a linear head."""

    width: int
    depth: int
    size: int
    activation: str = "tanh"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, u):
        act = activation(self.activation)
        h = u.reshape(u.shape[0], -1).astype(self.dtype)
        for i in range(self.depth):
            h = act(nn.Dense(self.width, dtype=self.dtype, kernel_init=GLOROT_UNIFORM, name=f"hidden_{i}")(h))
        mean = nn.Dense(self.size, dtype=self.dtype, kernel_init=GLOROT_UNIFORM, name="mean")(h)
        log_sigma = nn.Dense(self.size, dtype=self.dtype, kernel_init=GLOROT_UNIFORM, name="log_sigma")(h)
        out_dtype = accumulation_dtype(self.dtype)
        return mean.astype(out_dtype), 2.0 * log_sigma.astype(out_dtype)


class ObservationMLP(nn.Module):
    """z_1 -> ``depth`` Dense+activation layers of ``width`` -> the likelihood's parameters
    ``(B, *output_shape, params_per_subpixel)``."""

    width: int
    depth: int
    output_shape: tuple[int, ...]
    params_per_subpixel: int = 1
    activation: str = "tanh"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z):
        act = activation(self.activation)
        h = z.astype(self.dtype)
        for i in range(self.depth):
            h = act(nn.Dense(self.width, dtype=self.dtype, kernel_init=GLOROT_UNIFORM, name=f"hidden_{i}")(h))
        size = math.prod(self.output_shape) * self.params_per_subpixel
        out = nn.Dense(size, dtype=self.dtype, kernel_init=GLOROT_UNIFORM, name="out")(h)
        return out.reshape(z.shape[0], *self.output_shape, self.params_per_subpixel).astype(
            accumulation_dtype(self.dtype)
        )


def _sum_over_event(values):
    return jnp.sum(values, axis=tuple(range(1, values.ndim)))


def _layer_keys(keys, layer):
    return jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, layer)


def _draw(mean, log_var, keys, temperature=1.0):
    eps = jax.vmap(lambda key: jax.random.normal(key, mean.shape[1:], jnp.float32))(keys)
    return mean + temperature * jnp.exp(0.5 * log_var) * eps


@dataclasses.dataclass(frozen=True)
class StochasticMLPVAE:
    """L stochastic layers of sizes ``latent_sizes`` (z_1 first) over flattened data.

    params: ``{"encoder": {"q_1": ..., "q_L": ...}, "decoder": {"x": p(x|z_1), "p_1": p(z_1|z_2),
    ...}, "prior": {}}``.
    """

    q_layers: tuple[GaussianMLP, ...]  # q(z_1 | x), q(z_2 | z_1), ...
    p_layers: tuple[GaussianMLP, ...]  # p(z_1 | z_2), ..., p(z_{L-1} | z_L)
    observation: ObservationMLP  # p(x | z_1)
    likelihood: Likelihood
    data_shape: tuple[int, ...]
    latent_sizes: tuple[int, ...]
    prior: StandardNormal = StandardNormal()

    @property
    def latent_shape(self):
        """The top layer's shape: what ``encode`` returns and ``decode`` takes."""
        return (self.latent_sizes[-1],)

    @property
    def num_layers(self):
        return len(self.latent_sizes)

    def init(self, key):
        keys = jax.random.split(key, 2 * self.num_layers + 1)
        inputs = [jnp.zeros((1, *self.data_shape), jnp.float32)] + [
            jnp.zeros((1, size), jnp.float32) for size in self.latent_sizes
        ]
        encoder = {
            f"q_{l + 1}": layer.init(keys[l], inputs[l])["params"] for l, layer in enumerate(self.q_layers)
        }
        decoder = {"x": self.observation.init(keys[self.num_layers], inputs[1])["params"]}
        for l, layer in enumerate(self.p_layers):
            decoder[f"p_{l + 1}"] = layer.init(keys[self.num_layers + 1 + l], inputs[l + 2])["params"]
        return {"encoder": encoder, "decoder": decoder, "prior": {}}

    def _q(self, params, l, u):
        return self.q_layers[l].apply({"params": params["encoder"][f"q_{l + 1}"]}, u)

    def _p(self, params, l, z_above):
        """p(z_{l+1} | z_{l+2}) for 0-based l (the layer below ``z_above``)."""
        return self.p_layers[l].apply({"params": params["decoder"][f"p_{l + 1}"]}, z_above)

    def _observe(self, params, z_1):
        return self.observation.apply({"params": params["decoder"]["x"]}, z_1)

    def posterior(self, params, x):
        """(mean, log_var) of the top layer's q(z_L | z_{L-1}) along the path of posterior means."""
        u = encoder_input(self.likelihood.input_kind, x)
        for l in range(self.num_layers):
            mean, log_var = self._q(params, l, u)
            u = mean
        return mean, log_var

    def posterior_path(self, params, x, keys):
        """Per layer, bottom-up, the (mean, log_var) of q(z_l | z_{l-1}) along one sampled path
        z_l ~ q (the same draws as ``infer`` with these ``keys``)."""
        u, path = encoder_input(self.likelihood.input_kind, x), []
        for l in range(self.num_layers):
            mean, log_var = self._q(params, l, u)
            path.append((mean, log_var))
            u = _draw(mean, log_var, _layer_keys(keys, l))
        return tuple(path)

    def prior_components(self, params) -> priors_lib.MixtureComponents:
        del params
        return priors_lib.standard_normal_components(self.latent_shape)

    def prior_log_prob(self, params, z):
        """log p(z_L) of the top layer for a batch z_L, shape (B,)."""
        del params
        return _sum_over_event(dist.standard_normal_log_prob(z))

    def infer(self, params, x, keys) -> LatentTerms:
        u = encoder_input(self.likelihood.input_kind, x)
        zs, log_qs, posteriors = [], [], []
        for l in range(self.num_layers):
            mean, log_var = self._q(params, l, u)
            u = _draw(mean, log_var, _layer_keys(keys, l))
            zs.append(u)
            posteriors.append((mean, log_var))
            log_qs.append(_sum_over_event(dist.diag_gaussian_log_prob(u, mean, log_var)))
        top_mean, top_log_var = posteriors[-1]
        log_p_top = _sum_over_event(dist.standard_normal_log_prob(zs[-1]))
        kl_groups = [_sum_over_event(dist.kl_standard_normal(top_mean, top_log_var))]
        log_p = log_p_top
        for l in reversed(range(self.num_layers - 1)):
            log_p_l = _sum_over_event(dist.diag_gaussian_log_prob(zs[l], *self._p(params, l, zs[l + 1])))
            kl_groups.append(log_qs[l] - log_p_l)
            log_p = log_p + log_p_l
        return LatentTerms(self._observe(params, zs[0]), tuple(kl_groups), sum(log_qs), log_p)

    def _down(self, params, z_top, keys, temperature, *, at_mean=False):
        z = z_top
        for l in reversed(range(self.num_layers - 1)):
            mean, log_var = self._p(params, l, z)
            z = mean if at_mean else _draw(mean, log_var, _layer_keys(keys, l), temperature)
        return self._observe(params, z)

    def generate(self, params, keys, temperature=1.0):
        top = self.num_layers - 1
        z_top = _draw(
            jnp.zeros((keys.shape[0], *self.latent_shape)),
            jnp.zeros((keys.shape[0], *self.latent_shape)),
            _layer_keys(keys, top),
            temperature,
        )
        return self._down(params, z_top, keys, temperature)

    def decoder_output(self, params, z):
        """Likelihood parameters with z_L = z and every lower layer at its conditional prior mean."""
        return self._down(params, z, None, 1.0, at_mean=True)


def stochastic_mlp_vae(
    data_shape=(28, 28, 1),
    latent_sizes=(50,),
    widths=(200,),
    depth=2,
    likelihood: Likelihood = Bernoulli(),
    activation="tanh",
    dtype: Any = jnp.float32,
) -> StochasticMLPVAE:
    """Burda et al.'s architectures: one layer ``latent_sizes=(50,), widths=(200,)``; two layers
    ``latent_sizes=(100, 50), widths=(200, 100)``; ``depth`` = 2 deterministic layers each."""
    data_shape, latent_sizes, widths = tuple(data_shape), tuple(latent_sizes), tuple(widths)
    if not latent_sizes or len(widths) != len(latent_sizes):
        raise ValueError(
            f"widths: expected one width per stochastic layer ({len(latent_sizes)} in latent_sizes "
            f"{latent_sizes}), got {widths}"
        )
    if min(latent_sizes + widths) < 1 or depth < 1:
        raise ValueError(f"latent_sizes {latent_sizes}, widths {widths}, depth {depth}: expected positive sizes")
    q_layers = tuple(
        GaussianMLP(width, depth, size, activation, dtype) for width, size in zip(widths, latent_sizes)
    )
    p_layers = tuple(
        GaussianMLP(widths[l + 1], depth, latent_sizes[l], activation, dtype) for l in range(len(latent_sizes) - 1)
    )
    observation = ObservationMLP(widths[0], depth, data_shape, likelihood.params_per_subpixel, activation, dtype)
    return StochasticMLPVAE(q_layers, p_layers, observation, likelihood, data_shape, latent_sizes)


def with_observation_bias(model: StochasticMLPVAE, params, pixel_means):
    """``params`` with p(x|z_1)'s output bias at logit(mean) per pixel (clipped to [0.001, 0.999]):
    the initialisation of Burda et al.'s code, which starts the decoder at the data's marginals."""
    if not isinstance(model.likelihood, Bernoulli):
        raise ValueError(f"output_bias: data_mean needs a Bernoulli likelihood, got {model.likelihood}")
    means = jnp.clip(jnp.asarray(pixel_means, jnp.float32).reshape(-1), 0.001, 0.999)
    bias = params["decoder"]["x"]["out"]["bias"]
    if means.shape != bias.shape:
        raise ValueError(f"pixel_means: expected {bias.shape[0]} values, got {means.shape[0]}")
    observation = {**params["decoder"]["x"], "out": {**params["decoder"]["x"]["out"], "bias": jnp.log(means / (1 - means))}}
    return {**params, "decoder": {**params["decoder"], "x": observation}}
