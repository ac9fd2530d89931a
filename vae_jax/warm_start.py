"""Where a run starts: ``model.init`` from the seed, with the decoder's output bias set from the
data (``Config.output_bias``), or at another model's parameters (``Config.init_from``): fine-tuning,
or growing a likelihood.

With ``init_from``, every parameter is copied from the source, which must have the same networks.
One change is allowed: the local autoregressive likelihood may grow into the cross-channel one
(``likelihood=local`` -> ``local-cross``). The cross-channel mixture's decoder gives the local
mixture's ``22 K`` numbers per pixel first and then ``12 K`` cross coefficients d = tanh(.), so
the last layer's new columns start at 0: d = 0, and the grown model at step 0 *is* the source
model, every latent it learned still in use. Why: a hierarchical VAE trained from scratch with
the cross-channel likelihood leaves its latents unused (the likelihood alone explains most of a
crop early in training), while one whose latents already carry the image keeps them.
"""

from __future__ import annotations

import jax
import numpy as np

from vae_jax import config as config_lib
from vae_jax import configured, likelihood_fit, trained
from vae_jax.stochastic_mlp import with_observation_bias

# (source likelihood, new likelihood): the new one's numbers per pixel extend the source's, and
# zeros in the extension leave its distribution unchanged.
GROWABLE_LIKELIHOODS = {("local", "local-cross")}
# Training batches the output_bias="fit" least squares reads (1280 crops at batch 32): plenty
# for the few coefficients of each channel.
FIT_BATCHES = 40


class WarmStartError(ValueError):
    """A source whose parameters cannot start this configuration."""


def initial_state(model, config, source):
    """Step 0 of a run: ``model.init`` from the seed, and for ``output_bias="data_mean"`` the
    decoder's output bias at the logit of the training images' mean (Burda et al.'s code), for
    ``output_bias="fit"`` at the least-squares fit of each pixel from its likelihood's context
    over the first training batches (``vae_jax.likelihood_fit``); with ``init_from``, at another
    model's parameters (``initial_params``), the output bias theirs. A source that cannot start
    the run is a ``ConfigError`` naming the field."""
    state = configured.init_state(model, config)
    if config.init_from:
        try:
            params = initial_params(model, config, state.params)
        except (WarmStartError, trained.LoadError) as error:
            raise config_lib.ConfigError("init_from", str(error).removeprefix("init_from: ")) from None
        return configured.init_state(model, config, params)
    if config.output_bias == "zero":
        return state
    if config.output_bias == "fit":
        batches = source.train_batches(0, FIT_BATCHES, config.batch_size, config.seed)
        crops = np.asarray(batches).reshape(-1, *np.shape(batches)[2:])
        try:
            bias = likelihood_fit.fitted_output_bias(model.likelihood, crops)
            params = likelihood_fit.with_output_bias(state.params, bias)
        except ValueError as error:
            raise config_lib.ConfigError("output_bias", str(error).removeprefix("output_bias: ")) from None
        return configured.init_state(model, config, params)
    if config.model != "stochastic_mlp":
        raise config_lib.ConfigError("output_bias", f"data_mean needs model=stochastic_mlp, got model={config.model!r}")
    images, _ = source.train_images_and_labels()
    means = np.mean(np.asarray(images, np.float64), axis=0) / 255.0
    return configured.init_state(model, config, with_observation_bias(model, state.params, means))


def _path_name(path) -> str:
    return "/".join(str(getattr(key, "key", key)) for key in path)


def grown_output_layer(source, new_shape, source_per_pixel: int, new_per_pixel: int) -> np.ndarray:
    """The decoder's last kernel or bias ``(..., P * source_per_pixel)`` as ``(..., P * new_per_pixel)``:
    each of the P output positions (the pixels of a patch) keeps its block, the new columns 0."""
    source = np.asarray(source)
    positions = source.shape[-1] // source_per_pixel
    if positions * new_per_pixel != new_shape[-1] or source.shape[:-1] != tuple(new_shape[:-1]):
        raise WarmStartError(f"init_from: the decoder's last layer {source.shape} cannot grow to {tuple(new_shape)}")
    grown = np.zeros((*source.shape[:-1], positions, new_per_pixel), source.dtype)
    grown[..., :source_per_pixel] = source.reshape(*source.shape[:-1], positions, source_per_pixel)
    return grown.reshape(new_shape)


def transplant(fresh, source, *, grow_output: tuple[int, int] | None = None):
    """``source``'s parameters in ``fresh``'s structure and dtypes. ``grow_output`` =
    (numbers per pixel in the source, in the new model): the decoder's last layer is widened by
    ``grown_output_layer``. Any other difference of structure or shape raises, naming it."""
    fresh_leaves = dict((_path_name(p), v) for p, v in jax.tree_util.tree_leaves_with_path(fresh))
    source_leaves = dict((_path_name(p), v) for p, v in jax.tree_util.tree_leaves_with_path(source))
    missing = sorted(fresh_leaves.keys() - source_leaves.keys())
    extra = sorted(source_leaves.keys() - fresh_leaves.keys())
    if missing or extra:
        raise WarmStartError(
            f"init_from: the source has other networks (parameters it lacks: {missing[:4]}; "
            f"it has beside: {extra[:4]})"
        )

    output_layer = "/".join(likelihood_fit.output_layer_path(fresh)) if grow_output is not None else None

    def take(path, new):
        name = _path_name(path)
        old = source_leaves[name]
        if np.shape(old) == np.shape(new):
            return np.asarray(old, new.dtype)
        if output_layer is not None and name.rsplit("/", 1)[0] == output_layer:
            return grown_output_layer(old, np.shape(new), *grow_output).astype(new.dtype)
        raise WarmStartError(f"init_from: {name} is {np.shape(old)} in the source and {np.shape(new)} here")

    return jax.tree_util.tree_map_with_path(take, fresh)


def initial_params(model, config, fresh):
    """The parameters ``config.init_from`` gives ``model`` (whose ``model.init`` made ``fresh``)."""
    source = trained.load(config.init_from)
    grow = None
    if source.config.likelihood != config.likelihood:
        if (source.config.likelihood, config.likelihood) not in GROWABLE_LIKELIHOODS:
            raise WarmStartError(
                f"init_from: likelihood {source.config.likelihood!r} cannot become {config.likelihood!r} "
                f"(can: {sorted(GROWABLE_LIKELIHOODS)})"
            )
        per_pixel = lambda likelihood: likelihood.params_shape((1, 1, 3))[-1]
        grow = (per_pixel(source.model.likelihood), per_pixel(model.likelihood))
    return transplant(fresh, source.params, grow_output=grow)
