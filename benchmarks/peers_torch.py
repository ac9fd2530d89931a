"""The PyTorch peer: the classic MLP VAE written the way PyTorch's examples write it
(``examples/vae/main.py``): Linear layers, ReLU, reparameterization, BCE-with-logits summed
over pixels plus the analytic KL, Adam. Imported only when torch is installed
(``pip install 'vae-jax[bench]'``, CPU wheel: ``pip install torch --index-url .../cpu``).

Same data as the vae-jax step it is compared with: uint8 images, dynamically binarized per step
(``torch.bernoulli(x / 255)``), batch 128, Adam 1e-3.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn


class VAE(nn.Module):
    def __init__(self, data_dim=784, hidden=400, latent=20):
        super().__init__()
        self.fc1 = nn.Linear(data_dim, hidden)
        self.fc21 = nn.Linear(hidden, latent)
        self.fc22 = nn.Linear(hidden, latent)
        self.fc3 = nn.Linear(latent, hidden)
        self.fc4 = nn.Linear(hidden, data_dim)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        return mu + torch.randn_like(std) * std

    def decode(self, z):
        return self.fc4(F.relu(self.fc3(z)))  # logits

    def forward(self, x):
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar


def loss_function(logits, x, mu, logvar):
    """-ELBO summed over the batch: BCE(x, sigmoid(logits)) + KL(q(z|x) || N(0, I))."""
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def setup_threads(threads: int | None = None) -> int:
    """Use every CPU (the brief's rule for a fair peer); returns the thread count."""
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    return threads


def make_train_step(hidden: int, batches_uint8, seed: int = 0, learning_rate: float = 1e-3):
    """A ``step()`` closure that trains on the given uint8 batches ``(N, B, 784)`` in turn, one
    optimizer step per call, and returns the loss tensor (already computed: torch is eager)."""
    torch.manual_seed(seed)
    model = VAE(batches_uint8.shape[-1], hidden, 20)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    data = torch.from_numpy(batches_uint8)
    state = {"i": 0}

    def step():
        x = torch.bernoulli(data[state["i"] % len(data)].float() / 255.0)
        state["i"] += 1
        optimizer.zero_grad()
        logits, mu, logvar = model(x)
        loss = loss_function(logits, x, mu, logvar)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def version() -> dict:
    return {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
