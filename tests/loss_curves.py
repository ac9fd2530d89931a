"""A few plain optax Adam steps on the ELBO: the shared check that a new model trains at all."""

import jax
import jax.numpy as jnp
import optax

import vae_jax


def adam_losses(model, params, x, key, steps, learning_rate=1e-3):
    """-mean ELBO before each of ``steps`` Adam updates, with one fixed key so the loss is a
    deterministic function of the params."""
    optimizer = optax.adam(learning_rate)
    loss = lambda p: -jnp.mean(vae_jax.elbo(model, p, x, key))

    @jax.jit
    def step(p, state):
        value, grads = jax.value_and_grad(loss)(p)
        updates, state = optimizer.update(grads, state, p)
        return optax.apply_updates(p, updates), state, value

    state, values = optimizer.init(params), []
    for _ in range(steps):
        params, state, value = step(params, state)
        values.append(float(value))
    return values
