"""The plain Flax peer: the MLP VAE written the way Flax's ``examples/vae`` writes it (linen
``Encoder``/``Decoder``/``VAE`` modules, ``flax.training.train_state.TrainState``, optax Adam,
one ``jax.jit`` train step per Python iteration with the PRNG key split in Python).

The one change from the example is the data: it takes the same uint8 batches as the vae-jax
step and binarizes them inside the step (``jax.random.bernoulli(x / 255)``), so both sides do
the same work per image. Hidden width is a parameter: 500 is the example's, 400 Kingma &
Welling's.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class Encoder(nn.Module):
    hidden: int
    latents: int

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(self.hidden, name="fc1")(x)
        x = nn.relu(x)
        mean_x = nn.Dense(self.latents, name="fc2_mean")(x)
        logvar_x = nn.Dense(self.latents, name="fc2_logvar")(x)
        return mean_x, logvar_x


class Decoder(nn.Module):
    hidden: int
    features: int

    @nn.compact
    def __call__(self, z):
        z = nn.Dense(self.hidden, name="fc1")(z)
        z = nn.relu(z)
        return nn.Dense(self.features, name="fc2")(z)


class VAE(nn.Module):
    hidden: int = 500
    latents: int = 20
    features: int = 784

    def setup(self):
        self.encoder = Encoder(self.hidden, self.latents)
        self.decoder = Decoder(self.hidden, self.features)

    def __call__(self, x, z_rng):
        mean, logvar = self.encoder(x)
        z = reparameterize(z_rng, mean, logvar)
        return self.decoder(z), mean, logvar


def reparameterize(rng, mean, logvar):
    std = jnp.exp(0.5 * logvar)
    eps = jax.random.normal(rng, logvar.shape)
    return mean + eps * std


@jax.vmap
def kl_divergence(mean, logvar):
    return -0.5 * jnp.sum(1 + logvar - jnp.square(mean) - jnp.exp(logvar))


@jax.vmap
def binary_cross_entropy_with_logits(logits, labels):
    logits = nn.log_sigmoid(logits)
    return -jnp.sum(labels * logits + (1.0 - labels) * jnp.log(-jnp.expm1(logits)))


def create_train_state(hidden, rng, learning_rate=1e-3, features=784, latents=20):
    init_data = jnp.ones((1, features), jnp.float32)
    params = VAE(hidden, latents, features).init(rng, init_data, jax.random.key(0))["params"]
    return train_state.TrainState.create(
        apply_fn=VAE(hidden, latents, features).apply, params=params, tx=optax.adam(learning_rate)
    )


def make_train_step(hidden, latents=20, features=784):
    @jax.jit
    def train_step(state, batch_uint8, rng):
        data_rng, z_rng = jax.random.split(rng)
        batch = jax.random.bernoulli(data_rng, batch_uint8.astype(jnp.float32) / 255.0).astype(jnp.float32)

        def loss_fn(params):
            recon_x, mean, logvar = VAE(hidden, latents, features).apply({"params": params}, batch, z_rng)
            bce_loss = binary_cross_entropy_with_logits(recon_x, batch).mean()
            kld_loss = kl_divergence(mean, logvar).mean()
            return bce_loss + kld_loss

        grads = jax.grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads)

    return train_step


def make_loop(hidden: int, batches_uint8, seed: int = 0):
    """A ``run()`` closure doing ``len(batches_uint8)`` steps the example's way (a Python loop,
    one jitted step each, the key split in Python); returns the state for blocking on. The
    step is compiled on the first call."""
    rng = jax.random.key(seed)
    rng, init_rng = jax.random.split(rng)
    features = batches_uint8.shape[-1]
    holder = {"state": create_train_state(hidden, init_rng, features=features), "rng": rng}
    train_step = make_train_step(hidden, features=features)
    batches = [jnp.asarray(b) for b in batches_uint8]

    def run():
        state, rng = holder["state"], holder["rng"]
        for batch in batches:
            rng, key = jax.random.split(rng)
            state = train_step(state, batch, key)
        holder["state"], holder["rng"] = state, rng
        return state

    return run
