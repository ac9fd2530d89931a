"""Exact FLOP counts of the MLP VAE, to check XLA's counter against and to give every MLP row a
floor that does not depend on the compiler.

Convention: one multiply-add is 2 FLOPs; only the matrix products are counted (bias adds,
activations, the likelihood and the optimizer are O(params + pixels) and left to XLA's count).
Layers of the MLP VAE with data size D, one hidden layer of H units and L latents:

  encoder  D -> H,  H -> 2L (the mean and log-variance heads);   decoder  L -> H,  H -> D.

Forward, per example:   F = 2 (D H + 2 H L + L H + H D).
Backward, per example:  every layer's weight gradient costs as much as its forward product, and
every layer's input gradient too, except the first layer's: the data is not differentiated,
so its gradient is never formed. Backward = F + F - 2 D H.
A train step is forward + backward = 3 F - 2 D H, per example (the usual "3 x forward"
convention overcounts by 2 D H; both are reported).
"""

from __future__ import annotations


def mlp_forward_macs(data_dim: int, hidden: int, latent: int) -> int:
    """Multiply-adds of one example's encoder + decoder pass (one posterior sample)."""
    return data_dim * hidden + hidden * 2 * latent + latent * hidden + hidden * data_dim


def mlp_forward_flops(batch: int, data_dim: int, hidden: int, latent: int) -> int:
    return 2 * batch * mlp_forward_macs(data_dim, hidden, latent)


def mlp_train_step_flops(batch: int, data_dim: int, hidden: int, latent: int) -> int:
    """Exact matmul FLOPs of forward + backward for one step: 2 B (3 M - D H)."""
    return 2 * batch * (3 * mlp_forward_macs(data_dim, hidden, latent) - data_dim * hidden)


def mlp_train_step_flops_3x(batch: int, data_dim: int, hidden: int, latent: int) -> int:
    """The "backward = 2 x forward" convention: 3 x the forward FLOPs."""
    return 3 * mlp_forward_flops(batch, data_dim, hidden, latent)


def mlp_log_likelihood_flops(
    images: int, k: int, chunk_size: int, data_dim: int, hidden: int, latent: int
) -> int:
    """Matmul FLOPs of the chunked importance-sampled log-likelihood: the decoder runs once per
    sample (k per image); the encoder once per image per chunk (q(z|x) does not depend on the
    sample, so the chunk's samples share it)."""
    chunks = -(-k // chunk_size)
    decoder = latent * hidden + hidden * data_dim
    encoder = data_dim * hidden + hidden * 2 * latent
    return 2 * images * (chunks * chunk_size * decoder + chunks * encoder)


def mlp_log_likelihood_floor_flops(images: int, k: int, data_dim: int, hidden: int, latent: int) -> int:
    """The least work any implementation must do: k decoder passes and one encoder pass per image."""
    return 2 * images * (k * (latent * hidden + hidden * data_dim) + data_dim * hidden + hidden * 2 * latent)
