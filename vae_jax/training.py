"""Training: a ``TrainState`` pytree, a pure train step, and ``lax.scan`` over several steps.

The step is a pure function of (state, batch): the step's randomness comes from
``fold_in(state.key, state.step)``, so a run resumed from a checkpoint at step ``s`` computes
exactly what the uninterrupted run computed from ``s`` on.

Per step (``loss = -mean_x weighted_elbo(x)``, see ``objectives.weighted_elbo``):
  g = grad(loss); if loss and |g| are finite, |g| <= skip_grad_norm and
  |g| <= skip_grad_norm_factor * (running mean of accepted |g|):
      params <- params + AdamW(clip(g)), ema <- d * ema + (1 - d) * params
  else: nothing changes but the step and the count of skipped updates (a ``lax.cond``).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from vae_jax import evaluation, objectives
from vae_jax.config import Config
from vae_jax.data.transforms import prepare

GRAD_NORM_WARMUP_STEPS = 20


class TrainState(NamedTuple):
    step: jax.Array  # int32 scalar: updates attempted so far
    params: Any
    opt_state: Any
    ema_params: Any
    key: jax.Array  # raw uint32 key data, so checkpoints hold plain arrays
    skipped: jax.Array  # int32 scalar: updates skipped as non-finite or outliers
    grad_norm_ema: jax.Array  # float32 scalar: running mean of accepted gradient norms


# Burda et al. (2015, sec. 5): 3^i epochs at learning rate 0.001 * 10^(-i/7), i = 0..7 (3280 epochs).
BURDA_STAGES = 8


def burda_schedule(peak_value, total_steps):
    """Stage i of ``BURDA_STAGES`` runs at ``peak_value * 10**(-i/7)`` for 3^i / 3280 of the steps."""
    lengths = [3**i for i in range(BURDA_STAGES)]
    ends = [round(total_steps * sum(lengths[: i + 1]) / sum(lengths)) for i in range(BURDA_STAGES - 1)]
    values = jnp.asarray([peak_value * 10.0 ** (-i / 7.0) for i in range(BURDA_STAGES)], jnp.float32)
    boundaries = jnp.asarray(ends, jnp.int32)
    return lambda count: values[jnp.searchsorted(boundaries, count, side="right")]


def learning_rate_schedule(config: Config):
    """``cosine``: linear warm-up to ``learning_rate``, then cosine decay to
    ``end_learning_rate_ratio`` of it; ``burda``: the IWAE paper's eight stages (``burda_schedule``)."""
    if config.lr_schedule == "burda":
        return burda_schedule(config.learning_rate, config.steps)
    if config.lr_schedule != "cosine":
        raise ValueError(f"lr_schedule: expected cosine or burda, got {config.lr_schedule!r}")
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=min(config.warmup_steps, max(config.steps - 1, 0)),
        decay_steps=max(config.steps, 1),
        end_value=config.learning_rate * config.end_learning_rate_ratio,
    )


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """Adam(W) with the configured betas and epsilon; global-norm clipping unless grad_clip is 0."""
    adam = dict(b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps)
    schedule = learning_rate_schedule(config)
    if config.weight_decay:
        optimizer = optax.adamw(schedule, weight_decay=config.weight_decay, **adam)
    else:
        optimizer = optax.adam(schedule, **adam)
    if config.grad_clip > 0:
        optimizer = optax.chain(optax.clip_by_global_norm(config.grad_clip), optimizer)
    return optimizer


def kl_weight(config: Config, step):
    """KL warm-up: beta rises linearly from 0 to 1 over ``kl_warmup_steps`` (Sonderby et al. 2016)."""
    if config.kl_warmup_steps <= 0:
        return jnp.float32(1.0)
    return jnp.minimum(1.0, step.astype(jnp.float32) / config.kl_warmup_steps)


def ema_decay(config: Config, step):
    """min(decay, (1 + t) / (10 + t)): early on the average follows the parameters closely, so
    a short run is not evaluated at weights dominated by their initialisation."""
    t = step.astype(jnp.float32)
    return jnp.minimum(config.ema_decay, (1.0 + t) / (10.0 + t))


def init_state(model, config: Config, key, params=None) -> TrainState:
    """The state at step 0: ``params`` if given (drawn from the key's first half otherwise)."""
    init_key, train_key = jax.random.split(key)
    params = model.init(init_key) if params is None else params
    return TrainState(
        step=jnp.int32(0),
        params=params,
        opt_state=make_optimizer(config).init(params),
        ema_params=jax.tree_util.tree_map(jnp.copy, params),  # its own buffers: the step donates both
        key=jax.random.key_data(train_key),
        skipped=jnp.int32(0),
        grad_norm_ema=jnp.float32(0.0),
    )


def batch_loss(model, config: Config, params, batch, key, beta):
    """The training loss of a uint8 batch, with the diagnostics the metrics log wants.

    ``objective="elbo"``: -mean over the batch of the weighted ELBO, averaged over ``k`` draws;
    ``objective="iwae"``: -mean of the k-sample bound L_k (Burda et al. 2015), whose gradient
    flows through the reparameterized samples with weights softmax(log w).
    """
    data_key, elbo_key = jax.random.split(key)
    x = prepare(batch, config.likelihood_input, data_key)
    if config.objective == "iwae":
        log_w = objectives.log_importance_weights(model, params, x, elbo_key, config.k)
        bound = jax.nn.logsumexp(log_w, axis=-1) - jnp.log(float(config.k))
        elbo = jnp.mean(log_w, axis=-1)
        metrics = {"elbo": jnp.mean(elbo), "iwae_bound": jnp.mean(bound)}
        loss = -jnp.mean(bound)
    else:
        if config.k == 1:
            terms = jax.tree_util.tree_map(lambda a: a[None], objectives.elbo_terms(model, params, x, elbo_key))
        else:
            keys = jax.random.split(elbo_key, config.k)
            terms = jax.vmap(lambda k: objectives.elbo_terms(model, params, x, k))(keys)
        weighted = objectives.weighted_elbo(terms, beta=beta, free_bits=config.free_bits)
        elbo = jnp.mean(terms.reconstruction - terms.kl, axis=0)
        metrics = {"elbo": jnp.mean(elbo), "kl": jnp.mean(terms.kl), "reconstruction": jnp.mean(terms.reconstruction)}
        loss = -jnp.mean(weighted)
    metrics["bits_per_dim"] = jnp.mean(bits_per_dim_of(model, config, elbo))
    return loss, metrics


def bits_per_dim_of(model, config: Config, log_prob):
    dims = 1
    for size in model.data_shape:
        dims *= size
    return evaluation.bits_per_dim(log_prob, dims, dequantized=config.likelihood_input == "dequantized")


def train_step(model, config: Config, optimizer, state: TrainState, batch):
    """One update from a uint8 batch; returns the new state and the step's metrics."""
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    beta = kl_weight(config, state.step)
    loss_of = lambda params: batch_loss(model, config, params, batch, key, beta)
    (loss, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    grad_norm = optax.tree.norm(grads)
    accept = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    if config.skip_grad_norm > 0:
        accept &= grad_norm <= config.skip_grad_norm
    if config.skip_grad_norm_factor > 0:
        # Outliers relative to the recent norms; the first steps only build the average.
        settled = state.step >= GRAD_NORM_WARMUP_STEPS
        accept &= ~settled | (grad_norm <= config.skip_grad_norm_factor * state.grad_norm_ema)
    norm_ema = jnp.where(state.step == 0, grad_norm, 0.98 * state.grad_norm_ema + 0.02 * grad_norm)

    def update(_):
        updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        if config.ema_decay == 0:
            return new_params, new_opt_state, new_params
        new_ema = optax.incremental_update(new_params, state.ema_params, 1.0 - ema_decay(config, state.step))
        return new_params, new_opt_state, new_ema

    def skip(_):
        return state.params, state.opt_state, state.ema_params

    # A cond, not a where over every leaf: a skipped step does no optimizer work, and an accepted
    # one saves three elementwise passes over params, moments and average (0.4 ms of a 5 ms
    # MLP step on 2 CPU cores).
    params, opt_state, ema_params = jax.lax.cond(accept, update, skip, None)
    new_state = TrainState(
        step=state.step + 1,
        params=params,
        opt_state=opt_state,
        ema_params=ema_params,
        key=state.key,
        skipped=state.skipped + (~accept).astype(jnp.int32),
        grad_norm_ema=jnp.where(accept, norm_ema, state.grad_norm_ema),
    )
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm, beta=beta, skipped=(~accept).astype(jnp.int32))
    return new_state, metrics


def make_train_steps(model, config: Config):
    """A jitted ``(state, batches) -> (state, metrics)`` running ``len(batches)`` steps in one
    dispatch; the state's buffers are donated, so it updates in place.

    The steps run in a ``lax.scan``, except on CPU for models with convolutions: XLA:CPU runs
    convolutions inside a while-loop body through a slow path (jax-ml/jax#12868), measured here
    at 30-50x slower per step than the same step unrolled, so there the steps are unrolled at
    trace time (compile time grows linearly in ``steps_per_dispatch``). Dense models keep the
    scan on CPU too: unrolled, the MLP step measured 1.8x slower (9.5 vs 5.2 ms at batch 128).
    """
    optimizer = make_optimizer(config)
    step = lambda state, batch: train_step(model, config, optimizer, state, batch)

    def run(state, batches):
        if not (jax.default_backend() == "cpu" and _has_convolutions(step, state, batches[0])):
            return jax.lax.scan(step, state, batches)
        metrics = []
        for batch in batches:
            state, step_metrics = step(state, batch)
            metrics.append(step_metrics)
        return state, jax.tree_util.tree_map(lambda *values: jnp.stack(values), *metrics)

    return jax.jit(run, donate_argnums=0)


def _has_convolutions(fn, *args) -> bool:
    """Whether ``fn(*args)`` traces to any convolution (read off its jaxpr, at trace time)."""
    return "conv_general_dilated" in str(jax.make_jaxpr(fn)(*args))


@functools.lru_cache(maxsize=8)
def make_eval_fn(model, config: Config):
    """A jitted ``(params, batch_uint8, key) -> per-example ELBO terms`` for test sets, made once
    per (model, config) so periodic evaluations reuse one compilation."""

    def evaluate(params, batch, key):
        data_key, elbo_key = jax.random.split(key)
        x = prepare(batch, config.likelihood_input, data_key)
        return objectives.elbo_terms(model, params, x, elbo_key)

    return jax.jit(evaluate)
