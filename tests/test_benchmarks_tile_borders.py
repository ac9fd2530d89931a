"""The tile-border measurement: tiles cut in raster order, and its averages and saving against a
hand computation on a model whose per-pixel bits are set by hand."""

import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.tile_borders import border_costs, whole_tiles


def test_whole_tiles_are_cut_in_raster_order_and_drop_the_partial_edges():
    image = np.arange(5 * 7 * 2).reshape(5, 7, 2)
    tiles = whole_tiles(image, (2, 3))
    assert tiles.shape == (4, 2, 3, 2) and tiles.dtype == np.int32
    np.testing.assert_array_equal(tiles[1], image[0:2, 3:6])
    np.testing.assert_array_equal(tiles[2], image[2:4, 0:3])


def test_border_costs_average_by_place_and_price_the_border_at_the_interior_cost():
    bits = np.full((4, 4), 2.0)
    bits[0, :], bits[:, 0], bits[0, 0] = 3.0, 4.0, 8.0  # row 0 (but the corner) 3, column 0 4
    nats = jnp.asarray(bits * math.log(2.0))
    kl_bits = 6.0

    def infer(params, batch, keys):
        n = batch.shape[0]
        return SimpleNamespace(decoder_out=None, kl_groups=[jnp.full((n,), kl_bits * math.log(2.0))])

    def log_prob(batch, decoder_out):  # per pixel, summed over one channel
        return -jnp.broadcast_to(nats, batch.shape[:3])

    model = SimpleNamespace(infer=infer, likelihood=SimpleNamespace(log_prob=log_prob))
    costs = border_costs(model, None, np.zeros((3, 4, 4, 1), np.int32), key=jax.random.key(0))

    assert costs["tiles"] == 3
    likelihood, border = bits.sum(), 3 * 3.0 + 3 * 4.0 + 8.0
    total = likelihood + kl_bits
    expected = {
        "row0": 3.0,
        "col0": 4.0,
        "corner": 8.0,
        "interior": 2.0,
        "neg_elbo_bits_per_dim": total / 16,
        "kl_bits_per_dim": kl_bits / 16,
        "edge_share_of_likelihood": border / likelihood,
        "saving_at_interior_cost": (border - 7 * 2.0) / total,
    }
    assert {name: costs[name] for name in expected} == pytest.approx(expected, rel=1e-6)
