"""Training: a ``TrainState`` pytree, the pure train step of (loss function, optimizer, state,
batch), several steps per dispatch, and the losses and schedules it is built from.

A loss function is ``loss_fn(params, batch, key, step) -> (loss, metrics)`` on a uint8 batch
(``elbo_loss``, ``iwae_loss``). The step's randomness comes from ``fold_in(state.key,
state.step)``, so a run resumed from a checkpoint at step ``s`` computes exactly what the
uninterrupted run computed from ``s`` on. Per step:

  g = grad(loss); if loss and |g| are finite, |g| <= skip_grad_norm and
  |g| <= skip_grad_norm_factor * (running mean of |g|, each skipped one clipped to that bound):
      params <- params + optimizer(g), ema <- d * ema + (1 - d) * params
  else: nothing changes but the step and the count of skipped updates.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from vae_jax import checks, evaluation, objectives
from vae_jax.images import prepare

GRAD_NORM_WARMUP_STEPS = 20
# How the scanned steps run off CPU, where a small model's step is bound by latency (kernel
# launches, and a host round trip for each cond predicate), not by arithmetic. On an H100 the
# Burda IWAE k=5 step took 153 us branchless against 187 us with the cond; unrolling 8 or 16
# steps a scan iteration took 160-167 us (benchmarks/results/gpu-h100, reproduce --variants).
ACCELERATOR_UNROLL = 1
ACCELERATOR_BRANCHLESS = True
LossFn = Callable[[Any, jax.Array, jax.Array, jax.Array], tuple[jax.Array, dict]]


class TrainState(NamedTuple):
    step: jax.Array  # int32 scalar: updates attempted so far
    params: Any
    opt_state: Any
    ema_params: Any
    key: jax.Array  # raw uint32 key data, so checkpoints hold plain arrays
    skipped: jax.Array  # int32 scalar: updates skipped as non-finite or outliers
    grad_norm_ema: jax.Array  # float32 scalar: running mean of gradient norms (skipped ones clipped)


class StepOptions(NamedTuple):
    """What the step does around the optimizer (static, hashable)."""

    ema_decay: float = 0.999  # 0: no average, the parameters themselves
    skip_grad_norm: float = 0.0  # 0: off; else skip updates whose gradient norm exceeds it
    skip_grad_norm_factor: float = 10.0  # 0: off; else skip norms above this multiple of their running mean


# ---------------------------------------------------------------- schedules and optimizer

# Burda et al. (2015, sec. 5): 3^i epochs at learning rate 0.001 * 10^(-i/7), i = 0..7 (3280 epochs).
BURDA_STAGES = 8


def burda_schedule(peak_value, total_steps):
    """Stage i of ``BURDA_STAGES`` runs at ``peak_value * 10**(-i/7)`` for 3^i / 3280 of the steps."""
    lengths = [3**i for i in range(BURDA_STAGES)]
    ends = [round(total_steps * sum(lengths[: i + 1]) / sum(lengths)) for i in range(BURDA_STAGES - 1)]
    values = jnp.asarray([peak_value * 10.0 ** (-i / 7.0) for i in range(BURDA_STAGES)], jnp.float32)
    boundaries = jnp.asarray(ends, jnp.int32)
    return lambda count: values[jnp.searchsorted(boundaries, count, side="right")]


def cosine_schedule(peak_value, total_steps, *, warmup_steps, end_ratio):
    """Linear warm-up to ``peak_value``, then cosine decay to ``end_ratio`` of it."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak_value,
        warmup_steps=min(warmup_steps, max(total_steps - 1, 0)),
        decay_steps=max(total_steps, 1),
        end_value=peak_value * end_ratio,
    )


def adam(schedule, *, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=0.0) -> optax.GradientTransformation:
    """Adam (AdamW when ``weight_decay``), after global-norm clipping unless ``grad_clip`` is 0."""
    if weight_decay:
        optimizer = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    else:
        optimizer = optax.adam(schedule, b1=b1, b2=b2, eps=eps)
    if grad_clip > 0:
        optimizer = optax.chain(optax.clip_by_global_norm(grad_clip), optimizer)
    return optimizer


def linear_warmup(step, warmup_steps):
    """KL warm-up (Sonderby et al. 2016): beta rises linearly from 0 to 1 over ``warmup_steps``."""
    if warmup_steps <= 0:
        return jnp.float32(1.0)
    return jnp.minimum(1.0, step.astype(jnp.float32) / warmup_steps)


# ---------------------------------------------------------------- losses


def on_prepared_data(fn):
    """``fn`` traced without ``checks``' device-side data-value check: its data come from
    ``prepare``, valid by construction, and the check's cond would cost a host round trip per
    step off CPU (see ``ACCELERATOR_BRANCHLESS``)."""

    @functools.wraps(fn)
    def traced(*args):
        with checks.value_checks("eager"):
            return fn(*args)

    return traced


def _bits_per_dim(model, log_prob, likelihood_input):
    return evaluation.bits_per_dim(log_prob, math.prod(model.data_shape), dequantized=likelihood_input == "dequantized")


def elbo_loss(model, *, likelihood_input, k=1, free_bits=0.0, kl_warmup_steps=0) -> LossFn:
    """-mean over the batch (and over ``k`` draws) of ``weighted_elbo``, with beta rising over
    ``kl_warmup_steps`` and ``free_bits`` per group."""

    def loss_fn(params, batch, key, step):
        data_key, elbo_key = jax.random.split(key)
        x = prepare(batch, likelihood_input, data_key)
        if k == 1:
            terms = jax.tree_util.tree_map(lambda a: a[None], objectives.elbo_terms(model, params, x, elbo_key))
        else:
            terms = jax.vmap(lambda key: objectives.elbo_terms(model, params, x, key))(jax.random.split(elbo_key, k))
        beta = linear_warmup(step, kl_warmup_steps)
        weighted = objectives.weighted_elbo(terms, beta=beta, free_bits=free_bits)
        elbo = jnp.mean(terms.reconstruction - terms.kl, axis=0)
        metrics = {
            "elbo": jnp.mean(elbo),
            "kl": jnp.mean(terms.kl),
            "reconstruction": jnp.mean(terms.reconstruction),
            "beta": beta,
            "bits_per_dim": jnp.mean(_bits_per_dim(model, elbo, likelihood_input)),
        }
        return -jnp.mean(weighted), metrics

    return on_prepared_data(loss_fn)


def sampled_elbo_loss(model, *, likelihood_input, k=1) -> LossFn:
    """-mean over the batch and ``k`` draws of log w = log p(x, z) - log q(z|x): the ELBO with its
    KL estimated at the drawn z, not in closed form (Burda et al.'s code trains its VAE on it); the
    same objective as ``elbo_loss``, a noisier gradient. With k = 1 it is ``iwae_loss`` at k = 1."""

    def loss_fn(params, batch, key, step):
        del step
        data_key, sample_key = jax.random.split(key)
        x = prepare(batch, likelihood_input, data_key)
        elbo = jnp.mean(objectives.log_importance_weights(model, params, x, sample_key, k=k), axis=-1)
        metrics = {
            "elbo": jnp.mean(elbo),
            "bits_per_dim": jnp.mean(_bits_per_dim(model, elbo, likelihood_input)),
        }
        return -jnp.mean(elbo), metrics

    return on_prepared_data(loss_fn)


def iwae_loss(model, *, likelihood_input, k) -> LossFn:
    """-mean over the batch of the k-sample bound L_k (Burda et al. 2015), its gradient through
    the reparameterized samples (weights softmax(log w)); the metrics' ``elbo`` is mean log w."""

    def loss_fn(params, batch, key, step):
        del step
        data_key, bound_key = jax.random.split(key)
        x = prepare(batch, likelihood_input, data_key)
        log_w = objectives.log_importance_weights(model, params, x, bound_key, k=k)
        bound = jax.nn.logsumexp(log_w, axis=-1) - math.log(k)
        elbo = jnp.mean(log_w, axis=-1)
        metrics = {
            "elbo": jnp.mean(elbo),
            "iwae_bound": jnp.mean(bound),
            "bits_per_dim": jnp.mean(_bits_per_dim(model, elbo, likelihood_input)),
        }
        return -jnp.mean(bound), metrics

    return on_prepared_data(loss_fn)


# ---------------------------------------------------------------- the step


def init_state(params, optimizer, key) -> TrainState:
    """The state at step 0 for ``params``; ``key`` drives every step's randomness."""
    return TrainState(
        step=jnp.int32(0),
        params=params,
        opt_state=optimizer.init(params),
        ema_params=jax.tree_util.tree_map(jnp.copy, params),  # its own buffers: the step donates both
        key=jax.random.key_data(key),
        skipped=jnp.int32(0),
        grad_norm_ema=jnp.float32(0.0),
    )


def ema_decay(decay, step):
    """min(decay, (1 + t) / (10 + t)): early on the average follows the parameters closely, so
    a short run is not evaluated at weights dominated by their initialisation."""
    t = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def train_step(
    loss_fn: LossFn, optimizer, state: TrainState, batch, options: StepOptions = StepOptions(), *, branchless=False
):
    """One update from a batch; returns the new state and the step's metrics.

    A skipped update is a ``lax.cond`` (the optimizer does no work), or with ``branchless`` a
    select between the updated and the old state: the same numbers, without the predicate's
    trip to the host that a cond costs on GPUs every step."""
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    (loss, metrics), grads = jax.value_and_grad(
        lambda params: loss_fn(params, batch, key, state.step), has_aux=True
    )(state.params)
    chex.assert_rank(loss, 0)
    grad_norm = optax.tree.norm(grads)
    accept = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    if options.skip_grad_norm > 0:
        accept &= grad_norm <= options.skip_grad_norm
    if options.skip_grad_norm_factor > 0:
        # Outliers relative to the recent norms; the first steps only build the average.
        settled = state.step >= GRAD_NORM_WARMUP_STEPS
        accept &= ~settled | (grad_norm <= options.skip_grad_norm_factor * state.grad_norm_ema)
    # A skipped norm still pulls the mean, clipped to the threshold: a lone outlier moves it by at
    # most 18%, while gradients that really grew (early in training they grow tenfold within tens
    # of steps, faster with sharp likelihoods) are caught up with in about 14 steps, before a
    # streak of skips stops the run.
    followed = grad_norm
    if options.skip_grad_norm_factor > 0:
        followed = jnp.where(accept, grad_norm, jnp.minimum(grad_norm, options.skip_grad_norm_factor * state.grad_norm_ema))
    norm_ema = jnp.where(state.step == 0, grad_norm, 0.98 * state.grad_norm_ema + 0.02 * followed)

    def update(_):
        updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        if options.ema_decay == 0:
            return new_params, new_opt_state, new_params
        decay = ema_decay(options.ema_decay, state.step)
        return new_params, new_opt_state, optax.incremental_update(new_params, state.ema_params, 1.0 - decay)

    def skip(_):
        return state.params, state.opt_state, state.ema_params

    if branchless:
        params, opt_state, ema_params = jax.tree_util.tree_map(
            lambda new, old: jnp.where(accept, new, old), update(None), skip(None)
        )
    else:
        # On CPU a cond, not a where over every leaf: a skipped step does no optimizer work, and
        # an accepted one saves three elementwise passes over params, moments and average.
        params, opt_state, ema_params = jax.lax.cond(accept, update, skip, None)
    new_state = TrainState(
        step=state.step + 1,
        params=params,
        opt_state=opt_state,
        ema_params=ema_params,
        key=state.key,
        skipped=state.skipped + (~accept).astype(jnp.int32),
        grad_norm_ema=jnp.where(jnp.isfinite(grad_norm), norm_ema, state.grad_norm_ema),
    )
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm, skipped=(~accept).astype(jnp.int32))
    return new_state, metrics


def make_train_steps(
    loss_fn: LossFn, optimizer, options: StepOptions = StepOptions(), *, unroll=None, branchless=None
):
    """A jitted ``(state, batches) -> (state, metrics)`` running ``len(batches)`` steps in one
    dispatch; the state's buffers are donated, so it updates in place.

    The steps run in a ``lax.scan``, except on CPU for models with convolutions: XLA:CPU runs
    convolutions inside a while-loop body through a slow path (jax-ml/jax#12868), so there the
    steps are unrolled at trace time (compile time grows linearly with the steps per dispatch).
    Dense models keep the scan on CPU, where unrolling them is slower (the train_step rows of the
    benchmarks measure both). ``unroll`` (steps per scan iteration) and ``branchless`` (see
    ``train_step``) change how the steps run, never what they compute; left ``None`` they take
    the backend's defaults, ``ACCELERATOR_UNROLL`` and ``ACCELERATOR_BRANCHLESS`` off CPU.
    """
    on_cpu = jax.default_backend() == "cpu"
    unroll = (1 if on_cpu else ACCELERATOR_UNROLL) if unroll is None else unroll
    branchless = (not on_cpu and ACCELERATOR_BRANCHLESS) if branchless is None else branchless
    step = functools.partial(train_step, loss_fn, optimizer, options=options, branchless=branchless)

    def run(state, batches):
        if not (on_cpu and _has_convolutions(step, state, batches[0])):
            return jax.lax.scan(step, state, batches, unroll=unroll)
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
def make_eval_fn(model, likelihood_input: str):
    """A jitted ``(params, batch_uint8, key) -> per-example ELBO terms`` for test sets, made once
    per (model, likelihood_input) so periodic evaluations reuse one compilation."""

    def evaluate(params, batch, key):
        data_key, elbo_key = jax.random.split(key)
        return objectives.elbo_terms(model, params, prepare(batch, likelihood_input, data_key), elbo_key)

    return jax.jit(on_prepared_data(evaluate))
