"""What a ``Config`` makes of training: its data source, loss, optimizer, jitted steps and the
training state at step 0 from its seed.

Pure wiring from configuration fields to the objects of ``training`` and ``vae_jax.data``; the
model itself is ``config.build_model``'s, and where a run starts (another model's parameters, an
output bias fitted to the data) is ``warm_start.initial_state``'s.
"""

from __future__ import annotations

import jax

from vae_jax import training
from vae_jax.config import Config
from vae_jax.data import load_source


def open_source(config: Config, spec: str | None = None):
    """The configuration's data source (or the source ``spec`` names, cut and augmented the same way)."""
    return load_source(
        spec or config.data,
        crop_size=config.crop_size,
        channels=config.channels,
        scales=config.scales,
        zooms=config.zooms,
        permute_channels=config.permute_channels,
        max_saturation=config.max_saturation,
        data_dir=config.data_dir,
        manual_dir=config.manual_dir,
        download=config.download,
    )


def loss_of(model, config: Config) -> training.LossFn:
    """The configured objective as a loss function of (params, uint8 batch, key, step)."""
    if config.model == "hyperprior":
        from vae_jax.rate_distortion import rate_distortion_loss

        return rate_distortion_loss(model, lmbda=config.rd_lambda)
    if config.objective == "iwae":
        return training.iwae_loss(model, likelihood_input=config.likelihood_input, k=config.k)
    if config.kl_estimate == "sampled":
        return training.sampled_elbo_loss(model, likelihood_input=config.likelihood_input, k=config.k)
    return training.elbo_loss(
        model, likelihood_input=config.likelihood_input, k=config.k, free_bits=config.free_bits,
        kl_warmup_steps=config.kl_warmup_steps,
    )  # fmt: skip


def optimizer_of(config: Config):
    """Adam (or AdamW) under the configured learning-rate schedule, clipping and weight decay."""
    if config.lr_schedule == "burda":
        schedule = training.burda_schedule(config.learning_rate, config.steps)
    else:
        schedule = training.cosine_schedule(
            config.learning_rate, config.steps, warmup_steps=config.warmup_steps,
            end_ratio=config.end_learning_rate_ratio,
        )  # fmt: skip
    return training.adam(
        schedule, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps,
        weight_decay=config.weight_decay, grad_clip=config.grad_clip,
    )  # fmt: skip


def step_options(config: Config) -> training.StepOptions:
    return training.StepOptions(config.ema_decay, config.skip_grad_norm, config.skip_grad_norm_factor)


def train_steps_of(model, config: Config, **how):
    """The jitted multi-step train function for a configuration (``how``: ``unroll``,
    ``branchless``, see ``training.make_train_steps``)."""
    return training.make_train_steps(loss_of(model, config), optimizer_of(config), step_options(config), **how)


def init_state(model, config: Config, params=None) -> training.TrainState:
    """The training state at step 0: params from model.init (or ``params``), keys from the seed."""
    init_key, train_key = jax.random.split(jax.random.key(config.seed))
    params = jax.jit(model.init)(init_key) if params is None else params  # compiled: see vae_jax.init
    return training.init_state(params, optimizer_of(config), train_key)
