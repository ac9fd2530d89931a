"""Observation models p(x|z): every discrete one sums to one over its 256 values, the Gaussian
matches scipy, samples lie in the data's domain."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vae_jax import likelihoods
from vae_jax.likelihoods import logistic

RNG = np.random.default_rng(0)


def test_discretized_logistic_mixture_sums_to_one_for_every_pixel():
    likelihood = likelihoods.DiscretizedLogisticMixture(num_components=5)
    out = jnp.asarray(RNG.normal(scale=2.0, size=(4, 4, 3, 15)), jnp.float32)
    values = jnp.arange(256).reshape(256, 1, 1, 1)
    log_probs = likelihood.subpixel_log_prob(values, out[None])  # (256, 4, 4, 3)
    np.testing.assert_allclose(jax.nn.logsumexp(log_probs, axis=0), 0.0, atol=3e-5)


def test_gaussian_likelihood_fixed_and_learned_scale():
    x = jnp.asarray(RNG.uniform(size=(5,)), jnp.float32)
    out = jnp.asarray(RNG.normal(size=(5, 2)), jnp.float32)
    fixed = likelihoods.Gaussian(obs_var=0.25)
    np.testing.assert_allclose(fixed.subpixel_log_prob(x, out[:, :1]), stats.norm.logpdf(x, out[:, 0], 0.5), rtol=1e-5)
    learned = likelihoods.Gaussian()
    want = stats.norm.logpdf(x, out[:, 0], np.exp(0.5 * out[:, 1]))
    np.testing.assert_allclose(learned.subpixel_log_prob(x, out), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="obs_var"):
        likelihoods.Gaussian(obs_var=-1.0)


def test_likelihood_samples_lie_in_the_data_domain():
    key = jax.random.key(3)
    out = 3 * jax.random.normal(key, (8, 8, 3, 15))
    x = likelihoods.DiscretizedLogisticMixture(5).sample(out, key)
    assert x.dtype == jnp.int32 and int(x.min()) >= 0 and int(x.max()) <= 255
    b = likelihoods.Bernoulli().sample(out[..., :1], key)
    assert set(np.unique(np.asarray(b))) <= {0.0, 1.0}


def _coupled_case(k, seed=0, shape=(6,)):
    rng = np.random.default_rng(seed)
    out = jnp.asarray(rng.normal(scale=2.0, size=(*shape, 10 * k)), jnp.float32)
    x = jnp.asarray(rng.integers(0, 256, (*shape, 3)), jnp.int32)
    return likelihoods.CoupledLogisticMixture(k), out, x


def test_coupled_conditionals_sum_to_one_and_multiply_to_the_joint():
    """For random parameters: each channel's probabilities over its 256 values, given the actual
    previous channels, sum to 1, and log p(r, g, b) = log p(r) + log p(g | r) + log p(b | r, g)."""
    likelihood, out, x = _coupled_case(4)
    conditionals = likelihood.channel_log_probs(x, out)
    assert conditionals.shape == (6, 3, 256)
    np.testing.assert_allclose(np.exp(conditionals).sum(-1), 1.0, atol=2e-5)
    picked = jnp.take_along_axis(conditionals, x[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(picked.sum(-1), likelihood.log_prob(x, out), rtol=1e-5)


def test_coupled_conditional_of_a_channel_ignores_the_later_channels_bit_for_bit():
    """What a decoder relies on: it asks for channel c's conditional before it knows channels c.., so
    their values must not change a single bit of it (jitted, as the coder runs it)."""
    likelihood, out, x = _coupled_case(3, seed=4, shape=(5, 7))
    table = jax.jit(likelihood.channel_log_probs)
    full = np.asarray(table(x, out))
    for channel in range(3):
        scrambled = x.at[..., channel:].set((x[..., channel:] * 7 + 11) % 256)
        np.testing.assert_array_equal(np.asarray(table(scrambled, out))[..., channel, :], full[..., channel, :])


@pytest.mark.slow
def test_coupled_joint_sums_to_one_over_all_colours():
    """Brute force over all 256^3 colours of one pixel: sum_{r,g,b} p(r, g, b) = 1."""
    likelihood, out, _ = _coupled_case(2, seed=1, shape=())
    values = jnp.arange(256)
    grid = jnp.stack(jnp.meshgrid(values, values, indexing="ij"), -1).reshape(-1, 2)  # (r, g) pairs
    total = 0.0
    for b in range(0, 256, 64):  # blocks of blue values keep memory small
        colours = jnp.concatenate(
            [jnp.repeat(grid, 64, axis=0), jnp.tile(jnp.arange(b, b + 64), grid.shape[0])[:, None]], axis=-1
        )
        total += float(jnp.sum(jnp.exp(likelihood.log_prob(colours, jnp.broadcast_to(out, (colours.shape[0], 20))))))
    assert total == pytest.approx(1.0, abs=1e-3)


def test_coupled_with_one_component_and_no_coupling_is_the_independent_likelihood():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.integers(0, 256, (5, 3)), jnp.int32)
    means, log_scales = rng.normal(size=(2, 5, 3))
    coupled_out = jnp.concatenate(
        [jnp.zeros((5, 1)), jnp.asarray(means), jnp.asarray(log_scales) - 2, jnp.zeros((5, 3))], axis=-1
    )  # logits, 3 means, 3 log-scales, 3 coefficients (tanh(0) = 0)
    independent_out = jnp.stack([jnp.zeros((5, 3)), jnp.asarray(means), jnp.asarray(log_scales) - 2], axis=-1)
    coupled = likelihoods.CoupledLogisticMixture(1).log_prob(x, coupled_out)
    independent = likelihoods.DiscretizedLogisticMixture(1).log_prob(x, independent_out)  # per pixel: summed over R, G, B
    np.testing.assert_allclose(coupled, independent, rtol=1e-6)


def test_coupled_sample_mean_and_layout():
    likelihood, out, _ = _coupled_case(3, seed=3, shape=(4, 4))
    assert likelihood.params_shape((4, 4, 3)) == (4, 4, 30)
    with pytest.raises(ValueError, match="RGB"):
        likelihood.params_shape((4, 4, 1))
    draws = likelihood.sample(out, jax.random.key(0))
    assert draws.shape == (4, 4, 3) and draws.dtype == jnp.int32 and int(draws.min()) >= 0 and int(draws.max()) <= 255
    mean = likelihood.mean(out)
    assert mean.shape == (4, 4, 3) and float(mean.min()) >= 0 and float(mean.max()) <= 1
    # A component with tiny scales puts ~all mass where its coupled means say: the sample there.
    sharp = jnp.concatenate([jnp.array([30.0, 0, 0]), jnp.array([0.2, 0, 0, 0.1, 0, 0, -0.3, 0, 0]),
                             jnp.full(9, -7.0), jnp.array([2.0, 0, 0, -1.0, 0, 0, 0.5, 0, 0])])  # fmt: skip
    r, g, b = np.asarray(likelihoods.CoupledLogisticMixture(3).sample(sharp, jax.random.key(1)))
    centre = lambda v: 2 * v / 255 - 1
    a, be, ga = np.tanh([2.0, -1.0, 0.5])
    assert abs(centre(r) - 0.2) < 0.01
    assert abs(centre(g) - (0.1 + a * centre(r))) < 0.01
    assert abs(centre(b) - (-0.3 + be * centre(r) + ga * centre(g))) < 0.01


def test_independent_channel_log_probs_are_each_sub_pixels_distribution():
    likelihood = likelihoods.DiscretizedLogisticMixture(3)
    out = jnp.asarray(RNG.normal(size=(2, 3, 9)), jnp.float32)
    table = likelihood.channel_log_probs(None, out)
    assert table.shape == (2, 3, 256)
    np.testing.assert_allclose(np.exp(table).sum(-1), 1.0, atol=3e-5)
    x = jnp.asarray(RNG.integers(0, 256, (2, 3)), jnp.int32)
    picked = jnp.take_along_axis(table, x[..., None], -1)[..., 0]
    np.testing.assert_allclose(picked, likelihood.subpixel_log_prob(x, out), rtol=1e-5)


def _local_case(k, seed=0, shape=(5, 6), likelihood_class=likelihoods.LocalAutoregressiveMixture):
    """A local likelihood of k components, random decoder outputs (scale 1.5) and random pixels."""
    likelihood = likelihood_class(k)
    rng = np.random.default_rng(seed)
    out = jnp.asarray(rng.normal(scale=1.5, size=likelihood.params_shape((*shape, 3))), jnp.float32)
    x = jnp.asarray(rng.integers(0, 256, (*shape, 3)), jnp.int32)
    return likelihood, out, x


def test_local_conditionals_sum_to_one_and_multiply_to_the_joint():
    """Every pixel's channel conditionals given its neighbours sum to 1 over the 256 values, and
    log p(x | z) is the sum of the picked ones over pixels and channels (the chain rule in raster
    order, which makes the joint sum to 1 over all images)."""
    likelihood, out, x = _local_case(3)
    conditionals = likelihood.channel_log_probs(x, out)
    assert conditionals.shape == (5, 6, 3, 256)
    np.testing.assert_allclose(np.exp(conditionals).sum(-1), 1.0, atol=2e-5)
    picked = jnp.take_along_axis(conditionals, x[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(picked.sum(-1), likelihood.log_prob(x, out), rtol=1e-5)
    np.testing.assert_allclose(likelihood.log_prob_sum(x, out, 3), picked.sum(), rtol=1e-5)


def test_local_pixel_is_the_coupled_mixture_with_means_moved_by_its_neighbours():
    """Pixel (i, j) computed by hand: the coupled mixture of its first 10K numbers with each
    channel's component means plus tanh(a_n) times the neighbours' bin centres (0 outside)."""
    likelihood, out, x = _local_case(2, seed=1, shape=(3, 4))
    k = 2
    centre = lambda v: 2.0 * np.asarray(v, np.float64) / 255.0 - 1.0
    coupled = likelihoods.CoupledLogisticMixture(k)
    for i, j in [(0, 0), (0, 3), (2, 0), (2, 3), (1, 2), (1, 3)]:
        params = np.asarray(out[i, j], np.float64)
        coefficients = np.tanh(params[10 * k :].reshape(4, 3, k))  # (neighbour, channel, component)
        shifted = params[: 10 * k].copy()
        for n, (dy, dx) in enumerate(likelihoods.CAUSAL_NEIGHBOURS):
            if i + dy >= 0 and 0 <= j + dx < x.shape[1]:
                value = centre(x[i + dy, j + dx])  # (3,) channels
                shifted[k : 4 * k] += (coefficients[n] * value[:, None]).ravel()
        want = coupled.log_prob(x[i, j], jnp.asarray(shifted, jnp.float32))
        np.testing.assert_allclose(likelihood.log_prob(x, out)[i, j], want, rtol=1e-5)


def test_local_zero_neighbour_coefficients_give_the_coupled_likelihood():
    likelihood, out, x = _local_case(3, seed=2)
    out = out.at[..., 30:].set(0.0)  # every neighbour coefficient tanh(0) = 0
    want = likelihoods.CoupledLogisticMixture(3).log_prob(x, out[..., :30])
    np.testing.assert_allclose(likelihood.log_prob(x, out), want, rtol=1e-6)


def test_local_conditional_of_a_pixel_ignores_every_later_value_bit_for_bit():
    """What a wavefront decoder relies on: pixel (i, j) channel c reads only its left, up, up-left
    and up-right neighbours and its own channels before c; any other value may be anything."""
    likelihood, out, x = _local_case(2, seed=3)
    table = jax.jit(likelihood.channel_log_probs)
    full = np.asarray(table(x, out))
    i, j = 2, 3
    for channel in range(3):
        scrambled = (x * 7 + 11) % 256
        keep = [(i, j - 1), (i - 1, j), (i - 1, j - 1), (i - 1, j + 1)]
        for a, b in keep:
            scrambled = scrambled.at[a, b].set(x[a, b])
        scrambled = scrambled.at[i, j, :channel].set(x[i, j, :channel])
        np.testing.assert_array_equal(np.asarray(table(scrambled, out))[i, j, channel], full[i, j, channel])


def test_local_sample_and_mean_follow_the_recursion_pixel_by_pixel():
    """With one sharp component (tiny scale), a sample is the deterministic recursion
    x_ij = m + a_left x_i,j-1 + a_up x_i-1,j + a_upleft x_i-1,j-1 + a_upright x_i-1,j+1, checked pixel by pixel."""
    k, height, width = 1, 4, 5
    params = np.zeros(22)
    params[1:4] = [0.3, -0.2, 0.1]  # means
    params[4:7] = -7.0  # log-scales: all mass on the nearest value
    weights = (0.25, 0.25, -0.1, 0.2)  # left, up, up-left, up-right, every channel
    params[10:22] = np.arctanh(np.repeat(np.array(weights)[:, None], 3, axis=1)).ravel()
    out = jnp.broadcast_to(jnp.asarray(params, jnp.float32), (height, width, 22))
    likelihood = likelihoods.LocalAutoregressiveMixture(k)
    sample = np.asarray(likelihood.sample(out, jax.random.key(0)))
    want = np.zeros((height, width, 3))
    for i in range(height):
        for j in range(width):
            want[i, j] = params[1:4]
            for a, (dy, dx) in zip(weights, likelihoods.CAUSAL_NEIGHBOURS):
                if i + dy >= 0 and 0 <= j + dx < width:
                    want[i, j] += a * (2.0 * sample[i + dy, j + dx] / 255.0 - 1.0)  # the drawn neighbours
    # Logistic noise of scale e^-7 (0.12 of a level) may tip a value across a rounding boundary.
    np.testing.assert_allclose(sample, (want + 1.0) * 127.5, atol=0.5 + 0.4)
    assert likelihood.params_shape((4, 5, 3)) == (4, 5, 22)
    mean = np.asarray(likelihood.mean(out)) * 255.0
    mean_want = np.zeros((height, width, 3))  # the recursion on the means themselves, no rounding
    for i in range(height):
        for j in range(width):
            mean_want[i, j] = params[1:4]
            for a, (dy, dx) in zip(weights, likelihoods.CAUSAL_NEIGHBOURS):
                if i + dy >= 0 and 0 <= j + dx < width:
                    mean_want[i, j] += a * (2.0 * mean[i + dy, j + dx] / 255.0 - 1.0)
    np.testing.assert_allclose(mean, (mean_want + 1.0) * 127.5, atol=1e-3)
    with pytest.raises(ValueError, match="RGB|\\(H, W, 3\\)"):
        likelihood.params_shape((4, 4, 1))


def _cross_case(k, seed=0, shape=(5, 6)):
    return _local_case(k, seed, shape, likelihoods.CrossChannelLocalMixture)


def test_cross_channel_pixel_reads_the_earlier_channels_neighbours():
    """Pixel (i, j) by hand: the local pixel's coupled parameters, with G's component means also
    moved by tanh(d) times R's neighbours and B's by R's and G's (0 outside the image)."""
    k = 2
    likelihood, out, x = _cross_case(k, seed=4, shape=(3, 4))
    assert likelihood.params_shape((3, 4, 3)) == (3, 4, 34 * k)
    centre = lambda v: 2.0 * np.asarray(v, np.float64) / 255.0 - 1.0
    coupled = likelihoods.CoupledLogisticMixture(k)
    for i, j in [(0, 0), (0, 3), (2, 0), (2, 3), (1, 2)]:
        params = np.asarray(out[i, j], np.float64)
        own = np.tanh(params[10 * k : 22 * k].reshape(4, 3, k))  # (neighbour, channel, component)
        cross = np.tanh(params[22 * k :].reshape(4, 3, k))  # (neighbour, pair G<-R B<-R B<-G, component)
        shifted = params[: 10 * k].copy()
        means = shifted[k : 4 * k].reshape(3, k)
        for n, (dy, dx) in enumerate(likelihoods.CAUSAL_NEIGHBOURS):
            if i + dy >= 0 and 0 <= j + dx < x.shape[1]:
                red, green, blue = centre(x[i + dy, j + dx])
                means += own[n] * np.array([red, green, blue])[:, None]
                means[1] += cross[n, 0] * red
                means[2] += cross[n, 1] * red + cross[n, 2] * green
        shifted[k : 4 * k] = means.ravel()
        want = coupled.log_prob(x[i, j], jnp.asarray(shifted, jnp.float32))
        np.testing.assert_allclose(likelihood.log_prob(x, out)[i, j], want, rtol=1e-5)
    # Zero cross coefficients: the local mixture of the first 22K numbers.
    flat = out.at[..., 22 * k :].set(0.0)
    np.testing.assert_allclose(
        likelihood.log_prob(x, flat), likelihoods.LocalAutoregressiveMixture(k).log_prob(x, flat[..., : 22 * k]), rtol=1e-6
    )


def test_cross_channel_conditionals_are_causal_and_normalised():
    """Channel conditionals sum to 1, multiply to the joint, and pixel (i, j) channel c reads only
    its neighbours (all channels) and its own channels before c, bit for bit."""
    likelihood, out, x = _cross_case(2, seed=5)
    table = jax.jit(likelihood.channel_log_probs)
    full = np.asarray(table(x, out))
    np.testing.assert_allclose(np.exp(full).sum(-1), 1.0, atol=2e-5)
    picked = np.take_along_axis(full, np.asarray(x)[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(picked.sum(-1), likelihood.log_prob(x, out), rtol=1e-5)
    i, j = 2, 3
    for channel in range(3):
        scrambled = (x * 7 + 11) % 256
        for a, b in [(i, j - 1), (i - 1, j), (i - 1, j - 1), (i - 1, j + 1)]:
            scrambled = scrambled.at[a, b].set(x[a, b])
        scrambled = scrambled.at[i, j, :channel].set(x[i, j, :channel])
        np.testing.assert_array_equal(np.asarray(table(scrambled, out))[i, j, channel], full[i, j, channel])
    # and R's conditional does move with R's neighbours, G's with R's neighbours: they are read.
    moved = x.at[i, j - 1, 0].set((x[i, j - 1, 0] + 128) % 256)
    assert np.all(np.asarray(table(moved, out))[i, j, 1] != full[i, j, 1])


def test_cross_channel_sample_follows_the_recursion():
    """One sharp component: a sample is x_G = m_G + 0.4 x_G(left) + 0.5 x_R(left) and
    x_B = m_B + 0.3 x_R(up) - 0.6 x_G(up) (R a constant), pixel by pixel, to within a level."""
    params = np.zeros(34)
    params[1:4] = [0.21, -0.1, 0.31]  # means
    params[4:7] = -7.0  # log-scales: all mass on the nearest value
    own = np.zeros((4, 3))
    own[0, 1] = 0.4  # G on its left neighbour
    cross = np.zeros((4, 3))
    cross[0, 0] = 0.5  # G on R's left neighbour
    cross[1, 1], cross[1, 2] = 0.3, -0.6  # B on R's and G's upper neighbours
    params[10:22], params[22:34] = np.arctanh(own).ravel(), np.arctanh(cross).ravel()
    height, width = 4, 5
    out = jnp.broadcast_to(jnp.asarray(params, jnp.float32), (height, width, 34))
    sample = np.asarray(likelihoods.CrossChannelLocalMixture(1).sample(out, jax.random.key(1)))
    centre = lambda v: 2.0 * v / 255.0 - 1.0
    want = np.zeros((height, width, 3))
    for i in range(height):
        for j in range(width):
            want[i, j] = params[1:4]
            if j > 0:
                want[i, j, 1] += 0.4 * centre(sample[i, j - 1, 1]) + 0.5 * centre(sample[i, j - 1, 0])
            if i > 0:
                want[i, j, 2] += 0.3 * centre(sample[i - 1, j, 0]) - 0.6 * centre(sample[i - 1, j, 1])
    # Logistic noise of scale e^-7 (0.12 of a level) tips values near a rounding boundary to the
    # next level; a missing or wrong cross term would move them by 10 to 40 levels.
    assert np.abs(sample - (want + 1.0) * 127.5).max() < 1.5


# ---------------------------------------------------------------- the contract, for every registered likelihood

# One small instance per registered name (a new registration fails the first test until it has one).
CONTRACT_CASES = {
    "bernoulli": likelihoods.Bernoulli(),
    "gaussian": likelihoods.Gaussian(),
    "logistic": likelihoods.DiscretizedLogistic(),
    "dlm": likelihoods.DiscretizedLogisticMixture(2),
    "coupled": likelihoods.CoupledLogisticMixture(2),
    "local": likelihoods.LocalAutoregressiveMixture(2),
    "local-cross": likelihoods.CrossChannelLocalMixture(2),
}
DISCRETE = [name for name, likelihood in CONTRACT_CASES.items() if likelihood.input_kind == "discrete"]


def _contract_case(name, shape=(2, 4, 5, 3), seed=0):
    """The likelihood, random decoder outputs (scale 1.5) and random data of its input kind."""
    likelihood, rng = CONTRACT_CASES[name], np.random.default_rng(seed)
    out = jnp.asarray(rng.normal(scale=1.5, size=(shape[0], *likelihood.params_shape(shape[1:]))), jnp.float32)
    if likelihood.input_kind == "binary":
        x = jnp.asarray(rng.integers(0, 2, shape), jnp.float32)
    elif likelihood.input_kind == "discrete":
        x = jnp.asarray(rng.integers(0, 256, shape), jnp.int32)
    else:
        x = jnp.asarray(rng.uniform(size=shape), jnp.float32)
    return likelihood, out, x


def test_every_registered_likelihood_has_a_case_and_the_registry_is_the_configs_names():
    from vae_jax import config

    assert tuple(CONTRACT_CASES) == tuple(likelihoods.REGISTRY) == config.CHOICES["likelihood"]
    for name, likelihood in CONTRACT_CASES.items():
        assert likelihoods.registered_name(likelihood) == name
        assert isinstance(likelihood, likelihoods.Likelihood)
        assert isinstance(likelihood, likelihoods.DiscreteLikelihood) == (name in DISCRETE)
        assert likelihoods.from_name(name, num_components=2, obs_var=None) == likelihood


@pytest.mark.parametrize("name", list(CONTRACT_CASES))
def test_log_prob_is_one_number_per_pixel_and_sums_to_log_prob_sum(name):
    likelihood, out, x = _contract_case(name)
    assert likelihood.input_kind in likelihoods.INPUT_KINDS
    assert likelihood.event_shape((4, 5, 3)) == (3,)
    # Jitted: one compilation each, not one per operation (most of these tests' time).
    per_pixel = np.asarray(jax.jit(likelihood.log_prob)(x, out))
    assert per_pixel.shape == (2, 4, 5)
    total = jax.jit(likelihood.log_prob_sum, static_argnums=2)(x, out, 3)
    np.testing.assert_allclose(total, per_pixel.sum(axis=(1, 2)), rtol=1e-5)
    if hasattr(likelihood, "subpixel_log_prob"):  # the split, where a likelihood has one
        split = jax.jit(lambda x, out: (likelihood.subpixel_log_prob(x, out), likelihood.log_prob(x, out)))
        per_subpixel, summed = split(x, out)
        assert per_subpixel.shape == (2, 4, 5, 3)
        np.testing.assert_array_equal(summed, jnp.sum(per_subpixel, axis=-1))


@pytest.mark.parametrize("name", list(CONTRACT_CASES))
def test_known_log_prob_scores_what_reads_nothing_unknown(name):
    """Brute force over every pixel of a mask with unknown sub-pixels: a likelihood that factorizes
    scores each known sub-pixel; the coupled one a pixel whose channels are all known; the local
    ones a pixel whose left, up, up-left and up-right neighbours (inside the image) are known too."""
    likelihood, out, x = _contract_case(name, seed=1)
    known = np.random.default_rng(2).random(x.shape) < 0.8
    scored = jax.jit(likelihood.known_log_prob)
    got = np.asarray(scored(x, out, jnp.asarray(known)))
    per_pixel = np.asarray(jax.jit(likelihood.log_prob)(x, out))
    np.testing.assert_array_equal(scored(x, out, jnp.ones(x.shape, bool)), per_pixel)
    batch, height, width, _ = x.shape
    if hasattr(likelihood, "subpixel_log_prob"):
        split = np.asarray(jax.jit(likelihood.subpixel_log_prob)(x, out))
        np.testing.assert_allclose(got, np.where(known, split, 0.0).sum(-1), rtol=1e-6)
        return
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                offsets = ((0, -1), (-1, 0), (-1, -1), (-1, 1)) if name in ("local", "local-cross") else ()
                reads = [(i + dy, j + dx) for dy, dx in offsets]
                inside = [(a, c) for a, c in reads if a >= 0 and 0 <= c < width]
                scorable = known[b, i, j].all() and all(known[b, a, c].all() for a, c in inside)
                assert got[b, i, j] == (per_pixel[b, i, j] if scorable else 0.0), (b, i, j)


def _read_by(context, i, j, channel):
    """The (row, column, channel) values sub-pixel (i, j, channel) may read by its declared context:
    its own earlier channels, each neighbour's same channel and the sources of its cross pairs, and
    (reading its earlier channels) what those read."""
    own = set(range(channel)) if context.earlier_channels else set()
    sources = own | {channel}
    sources |= {source for source, target in context.earlier_channel_neighbours if target in own | {channel}}
    return {(i, j, c) for c in own} | {(i + dy, j + dx, c) for dy, dx in context.neighbours for c in sources}


@pytest.mark.parametrize("name", DISCRETE)
def test_channel_conditionals_read_only_the_declared_context_bit_for_bit(name):
    """Every value but those the context declares scrambled: sub-pixel (i, j, c)'s conditional does
    not move by a bit (what lets a coder decode in the order the context implies)."""
    likelihood, out, x = _contract_case(name, shape=(1, 4, 5, 3), seed=3)
    table = jax.jit(likelihood.channel_log_probs)
    full = np.asarray(table(x, out))
    for i, j in [(0, 0), (2, 3), (3, 4), (3, 0)]:
        for channel in range(3):
            kept = np.zeros(x.shape[1:], bool)
            for a, b, c in _read_by(likelihood.context, i, j, channel):
                if 0 <= a < 4 and 0 <= b < 5:
                    kept[a, b, c] = True
            scrambled = jnp.where(kept, x, (x * 7 + 11) % 256)
            np.testing.assert_array_equal(np.asarray(table(scrambled, out))[0, i, j, channel], full[0, i, j, channel])


@pytest.mark.parametrize("name", DISCRETE)
def test_coding_tables_in_coding_order_are_the_channel_conditionals(name):
    """A decoder's view: stepping through ``coding_order`` with only the values of earlier steps
    known (the rest zero), each step's tables, normalized, are exp(channel_log_probs) of the whole
    image; every sub-pixel is coded once."""
    likelihood, out, x = _contract_case(name, shape=(1, 5, 7, 3), seed=4)
    want = np.exp(np.asarray(jax.jit(likelihood.channel_log_probs)(x, out), np.float64)).reshape(35, 3, 256)
    tables = likelihood.coding_tables(np.asarray(likelihood.coding_output(out)[0], np.float64))
    image, decoded = np.asarray(x[0]).reshape(35, 3), np.zeros((35, 3), np.int32)
    seen = np.zeros((35, 3), int)
    for indices, channel in likelihood.coding_order((5, 7), 3, 8):
        table = tables(indices, decoded, channel)
        np.testing.assert_allclose(table / table.sum(axis=1, keepdims=True), want[indices, channel], rtol=2e-4, atol=1e-7)
        decoded[indices, channel] = image[indices, channel]
        seen[indices, channel] += 1
    assert (seen == 1).all()


def test_coupled_likelihoods_are_the_independent_mixture_off_rgb():
    for name, likelihood in CONTRACT_CASES.items():
        assert likelihood.for_data_shape((4, 4, 3)) is likelihood
        reduced = likelihood.for_data_shape((4, 4, 1))
        want = likelihoods.DiscretizedLogisticMixture(2) if name in ("coupled", "local", "local-cross") else likelihood
        assert reduced == want and type(reduced) is type(want)


def test_register_checks_the_contract_and_the_name():
    registry = dict(likelihoods.REGISTRY)

    class Partial:
        input_kind = "discrete"
        context = likelihoods.Context()

    with pytest.raises(TypeError, match="needs channel_log_probs, coding_order, .*log_prob, log_prob_sum, mean"):
        likelihoods.register("partial")(Partial)
    subclass = type("Subclass", (likelihoods.DiscretizedLogisticMixture,), {})
    with pytest.raises(ValueError, match="'dlm' is already the likelihood DiscretizedLogisticMixture"):
        likelihoods.register("dlm")(subclass)
    with pytest.raises(ValueError, match="input_kind"):
        likelihoods.register("odd")(type("Odd", (likelihoods.Bernoulli,), {"input_kind": "colour"}))
    assert likelihoods.REGISTRY == registry  # nothing half-registered
    assert likelihoods.registered_name(subclass(2)) is None  # a subclass is not its parent
    with pytest.raises(ValueError, match="expected one of bernoulli, gaussian"):
        likelihoods.from_name("pixelcnn")


def test_the_config_names_a_likelihood_by_its_registered_name():
    import dataclasses

    from vae_jax import config as config_lib

    inputs = {"bernoulli": "dynamic_binary", "gaussian": "dequantized"}
    wanted = dict(CONTRACT_CASES, gaussian=likelihoods.Gaussian(0.5))  # each takes the options it has
    for name, want in wanted.items():
        config = config_lib.preset("photos", {"likelihood": name, "mixture_components": 2, "obs_var": 0.5})
        assert config.likelihood_input == inputs.get(name, "discrete")
        assert config_lib.build_likelihood(config) == want and type(config_lib.build_likelihood(config)) is type(want)
        assert config_lib.build_model(config, (8, 8, 1)).likelihood == want.for_data_shape((8, 8, 1))
    with pytest.raises(config_lib.ConfigError, match="^likelihood: expected one of bernoulli, .*local-cross, got 'pixelcnn'"):
        config_lib.validate(dataclasses.replace(config_lib.Config(), likelihood="pixelcnn"))


def test_context_refuses_what_a_wavefront_decoder_cannot_follow():
    with pytest.raises(ValueError, match="wavefront"):
        likelihoods.Context(neighbours=((0, 1),))  # the right neighbour comes later
    with pytest.raises(ValueError, match="wavefront"):
        likelihoods.Context(neighbours=((1, -1),))  # down-left: later in raster order
    with pytest.raises(ValueError, match="needs neighbours"):
        likelihoods.Context(earlier_channel_neighbours=((0, 1),))
    with pytest.raises(ValueError, match="source < target"):
        likelihoods.Context(neighbours=((0, -1),), earlier_channel_neighbours=((1, 0),))


def test_the_two_step_value_tables_are_the_discretized_logistic():
    """A coder codes an 8-bit value under one logistic as its cell of 8 values, then the value in the
    cell: P(cell) P(v | cell) is the 256-bin table, from the mean at the bins' middle to far outside
    [-1, 1], at the smallest and largest scales the likelihoods allow."""
    means = np.repeat(np.array([-3.0, -1.0, -0.5, 0.0, 0.37, 1.0, 4.0]), 4)
    log_scales = np.tile([logistic.MIN_LOGISTIC_LOG_SCALE, -4.0, -1.0, logistic.MAX_LOGISTIC_LOG_SCALE], 7)
    two_step = logistic.two_step_bins(means, log_scales)
    direct = logistic.logistic_bins(means, log_scales)
    np.testing.assert_allclose(two_step, direct, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(two_step.sum(axis=1), 1.0, rtol=1e-12)


def test_a_cell_without_mass_is_coded_under_a_uniform_table():
    """A value tens of scales from the mean: its cell's mass underflows, and the table in it must
    still be one the entropy coder can normalize (finite, positive), not zeros."""
    import constriction

    coding = logistic.cell_coding(np.array([0.9]), np.array([logistic.MIN_LOGISTIC_LOG_SCALE]))
    within = logistic.within_table(coding, np.array([0]))
    np.testing.assert_array_equal(within, np.ones((1, 8)))
    categorical = constriction.stream.model.Categorical(perfect=False)
    ans = constriction.stream.stack.AnsCoder()
    ans.encode_reverse(np.array([3], np.int32), categorical, within)
    ans.encode_reverse(np.array([0], np.int32), categorical, logistic.cell_table(coding))
    assert ans.decode(categorical, logistic.cell_table(coding))[0] == 0
    assert ans.decode(categorical, within)[0] == 3

