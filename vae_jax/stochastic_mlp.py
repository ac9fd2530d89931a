"""Stacked stochastic layers of Gaussian units with MLPs between them: the VAE and IWAE models
of Burda, Grosse & Salakhutdinov (2015, sec. 5), with inference bottom-up and generation top-down:

  q(z | x) = q(z_1 | x) q(z_2 | z_1) ... q(z_L | z_{L-1}),
  p(x, z)  = p(z_L) p(z_{L-1} | z_L) ... p(z_1 | z_2) p(x | z_1),

every conditional a diagonal Gaussian (or, for x, the model's likelihood) whose parameters an
MLP of ``depth`` tanh layers computes from the layer before it (``networks.mlp``'s encoder and
decoder). Between x and z_1 the hidden layers have ``widths[0]`` units, between z_l and z_{l+1}
``widths[l]``, in both directions. A Gaussian head outputs a mean and a log standard deviation
(sigma = exp(linear), as the paper's code parameterises it), with no clamp; weights start from
Glorot & Bengio's (2010) uniform heuristic, biases at zero.

With one stochastic layer this is the familiar VAE with a deeper MLP. Its latent is the tuple
of layers top-down, (z_L, ..., z_1) (one array for one layer), and ``kl_groups`` follows the
same order. The top layer's KL given z_{L-1} is analytic against the standard-normal prior;
below it p(z_l | z_{l+1}) depends on a z_{l+1} drawn after z_l, so those terms are the
one-sample estimates log q(z_l | z_{l-1}) - log p(z_l | z_{l+1}).

PRNG: layer l of example e draws with ``fold_in(keys[e], l)`` (l = 0 is z_1), in inference and
generation alike.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from vae_jax import checks
from vae_jax import distributions as dist
from vae_jax import priors as priors_lib
from vae_jax.architectures import check_parts
from vae_jax.hierarchical import check_keep_groups
from vae_jax.likelihoods import Bernoulli, Likelihood
from vae_jax.model import LatentTerms, as_latent, check_network_shapes, encoder_input, latent_groups
from vae_jax.networks.mlp import MLPDecoder, MLPEncoder
from vae_jax.priors import StandardNormal


@dataclasses.dataclass(frozen=True)
class StochasticMLPVAE:
    """L stochastic layers of sizes ``latent_sizes`` (z_1 first) over flattened data.

    params: ``{"encoder": {"q_1": ..., "q_L": ...}, "decoder": {"x": p(x|z_1), "p_1": p(z_1|z_2),
    ...}, "prior": {}}``.
    """

    q_layers: tuple[MLPEncoder, ...]  # q(z_1 | x), q(z_2 | z_1), ...
    p_layers: tuple[MLPEncoder, ...]  # p(z_1 | z_2), ..., p(z_{L-1} | z_L)
    observation: MLPDecoder  # p(x | z_1)
    likelihood: Likelihood
    data_shape: tuple[int, ...]
    latent_sizes: tuple[int, ...]
    prior: StandardNormal = StandardNormal()

    @property
    def num_groups(self):
        return len(self.latent_sizes)

    @property
    def latent_template(self):
        return as_latent(jax.ShapeDtypeStruct((size,), jnp.float32) for size in reversed(self.latent_sizes))

    def init(self, key):
        keys = jax.random.split(key, 2 * self.num_groups + 1)
        inputs = [jnp.zeros((1, *self.data_shape), jnp.float32)] + [
            jnp.zeros((1, size), jnp.float32) for size in self.latent_sizes
        ]
        encoder = {
            f"q_{l + 1}": layer.init(keys[l], inputs[l])["params"] for l, layer in enumerate(self.q_layers)
        }
        decoder = {"x": self.observation.init(keys[self.num_groups], inputs[1])["params"]}
        for l, layer in enumerate(self.p_layers):
            decoder[f"p_{l + 1}"] = layer.init(keys[self.num_groups + 1 + l], inputs[l + 2])["params"]
        params = {"encoder": encoder, "decoder": decoder, "prior": {}}
        check_network_shapes(self, params)
        return params

    def _q(self, params, l, u):
        return self.q_layers[l].apply({"params": params["encoder"][f"q_{l + 1}"]}, u)

    def _p(self, params, l, z_above):
        """p(z_{l+1} | z_{l+2}) for 0-based l (the layer below ``z_above``)."""
        return self.p_layers[l].apply({"params": params["decoder"][f"p_{l + 1}"]}, z_above)

    def _observe(self, params, z_1):
        return self.observation.apply({"params": params["decoder"]["x"]}, z_1)

    def _bottom_up(self, params, x, keys=None):
        """Per layer, z_1 first: (z_l, mean, log_var) of q(z_l | z_{l-1}), each z_l drawn with
        ``keys`` (or at its mean when ``keys`` is None)."""
        u, path = encoder_input(self.likelihood.input_kind, x), []
        for l in range(self.num_groups):
            mean, log_var = self._q(params, l, u)
            u = mean if keys is None else dist.gaussian_draws(mean, log_var, dist.fold_in_each(keys, l))
            path.append((u, mean, log_var))
        return path

    def posterior(self, params, x):
        """Every layer's (mean, log_var), top-down, along the path of posterior means."""
        path = self._bottom_up(params, x)[::-1]
        return as_latent(mean for _, mean, _ in path), as_latent(log_var for _, _, log_var in path)

    def posterior_path(self, params, x, keys):
        """Per layer, bottom-up, the (mean, log_var) of q(z_l | z_{l-1}) along one sampled path
        z_l ~ q (the same draws as ``infer`` with these ``keys``)."""
        return tuple((mean, log_var) for _, mean, log_var in self._bottom_up(params, x, keys))

    def prior_components(self, params) -> priors_lib.MixtureComponents:
        del params
        return priors_lib.standard_normal_components((self.latent_sizes[-1],))

    def prior_log_prob(self, params, z):
        """log p(z) = log p(z_L) + sum_{l<L} log p(z_l | z_{l+1}) for z = (z_L, ..., z_1)."""
        bottom_up = latent_groups(z)[::-1]
        log_p = dist.sum_over_event(dist.standard_normal_log_prob(bottom_up[-1]))
        for l in range(self.num_groups - 1):
            log_p = log_p + dist.sum_over_event(dist.diag_gaussian_log_prob(bottom_up[l], *self._p(params, l, bottom_up[l + 1])))
        return log_p

    def infer(self, params, x, keys) -> LatentTerms:
        path = self._bottom_up(params, x, keys)
        z_top, top_mean, top_log_var = path[-1]
        log_q, log_p, kl_top = priors_lib.top_terms(self.prior, None, z_top, top_mean, top_log_var)
        kl_groups = [kl_top]
        for l in reversed(range(self.num_groups - 1)):
            z, mean, log_var = path[l]
            log_q_l = dist.sum_over_event(dist.diag_gaussian_log_prob(z, mean, log_var))
            log_p_l = dist.sum_over_event(dist.diag_gaussian_log_prob(z, *self._p(params, l, path[l + 1][0])))
            kl_groups.append(log_q_l - log_p_l)
            log_q, log_p = log_q + log_q_l, log_p + log_p_l
        return LatentTerms(self._observe(params, path[0][0]), tuple(kl_groups), log_q, log_p)

    def _down(self, params, z, first, keys, temperature):
        """Draw layers ``first - 1`` down to z_1 from p(z_l | z_{l+1}) below the given ``z``
        (layer ``first``, 0-based), then observe."""
        for l in reversed(range(first)):
            z = dist.gaussian_draws(*self._p(params, l, z), dist.fold_in_each(keys, l), temperature)
        return self._observe(params, z)

    def generate(self, params, keys, temperature=1.0):
        top = self.num_groups - 1
        zeros = jnp.zeros((keys.shape[0], self.latent_sizes[-1]))
        return self._down(params, dist.gaussian_draws(zeros, zeros, dist.fold_in_each(keys, top), temperature), top, keys, temperature)

    def generate_from(self, params, x, keys, keep_groups: int, temperature=1.0, prior_keys=None):
        """Keep the top ``keep_groups`` layers of a posterior path (drawn with ``keys`` as
        ``infer`` does) and redraw the layers below from their priors (with ``prior_keys``)."""
        check_keep_groups(keep_groups, self.num_groups)
        prior_keys = keys if prior_keys is None else prior_keys
        if keep_groups == 0:
            return self.generate(params, prior_keys, temperature)
        path = self._bottom_up(params, x, keys)
        first = self.num_groups - keep_groups
        return self._down(params, path[first][0], first, prior_keys, temperature)

    def decoder_output(self, params, z):
        """p(x | z_1)'s parameters; z = (z_L, ..., z_1), of which only z_1 reaches x."""
        return self._observe(params, latent_groups(z)[-1])


def stochastic_mlp_vae(
    data_shape=(28, 28, 1),
    *,
    widths=(200,),
    depth=2,
    latent_sizes=(50,),
    likelihood: Likelihood = Bernoulli(),
    activation="tanh",
    dtype: Any = jnp.float32,
) -> StochasticMLPVAE:
    """Burda et al.'s architectures: one layer ``latent_sizes=(50,), widths=(200,)``; two layers
    ``latent_sizes=(100, 50), widths=(200, 100)``; ``depth`` = 2 deterministic layers each."""
    data_shape = checks.check_data_shape(data_shape)
    latent_sizes = checks.check_sizes("latent_sizes", latent_sizes)
    widths = checks.check_sizes("widths", widths)
    depth = checks.check_count("depth", depth)
    check_parts(likelihood, StandardNormal(), activation)
    if len(widths) != len(latent_sizes):
        raise ValueError(
            f"widths: expected one width per stochastic layer ({len(latent_sizes)} in latent_sizes "
            f"{latent_sizes}), got {widths}"
        )
    def gaussian(width, size):
        return MLPEncoder((width,) * depth, size, activation, dtype, kernel_init="glorot_uniform", log_var="log_sigma")

    q_layers = tuple(gaussian(width, size) for width, size in zip(widths, latent_sizes))
    p_layers = tuple(gaussian(widths[l + 1], latent_sizes[l]) for l in range(len(latent_sizes) - 1))
    observation = MLPDecoder(
        likelihood.params_shape(data_shape), (widths[0],) * depth, activation, dtype, kernel_init="glorot_uniform"
    )
    return StochasticMLPVAE(q_layers, p_layers, observation, likelihood, data_shape, latent_sizes)


def with_observation_bias(model: StochasticMLPVAE, params, pixel_means):
    """``params`` with p(x|z_1)'s output bias at logit(mean) per pixel (clipped to [0.001, 0.999]):
    the initialisation of Burda et al.'s code, which starts the decoder at the data's marginals."""
    if model.likelihood.input_kind != "binary":  # the output a logit per pixel: a Bernoulli's
        raise ValueError(f"output_bias: data_mean needs a Bernoulli likelihood (binary data), got {model.likelihood}")
    means = jnp.clip(jnp.asarray(pixel_means, jnp.float32).reshape(-1), 0.001, 0.999)
    bias = params["decoder"]["x"]["out"]["bias"]
    if means.shape != bias.shape:
        raise ValueError(f"pixel_means: expected {bias.shape[0]} values, got {means.shape[0]}")
    observation = {**params["decoder"]["x"], "out": {**params["decoder"]["x"]["out"], "bias": jnp.log(means / (1 - means))}}
    return {**params, "decoder": {**params["decoder"], "x": observation}}
