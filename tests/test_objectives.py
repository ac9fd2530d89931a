"""The conformance suite of ``vae_jax.objectives``: every model family x every public function
(elbo, iwae_bound, log_likelihood, encode, decode, sample, reconstruct), each run jitted and not
(``chex.variants``): vmap over single examples equals the batched call, jit equals no-jit, the
same key gives the same bits, shapes follow the model's declared structure. Then the
objectives' own equations: the ELBO as its terms, the weighted ELBO's options, gradients."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from conftest import FAMILIES, KEY, LIKELIHOOD_FAMILIES, data_for, perturbed

import vae_jax

# One model, params, data and set of functions per family, shared by the tests below: the same
# function objects let jax reuse their traces and compilations (most of these tests' time).
_SETUPS = {}


def setup(name):
    if name not in _SETUPS:
        model = {**FAMILIES, **LIKELIHOOD_FAMILIES}[name]()
        params = perturbed(vae_jax.init(model, KEY), 1)
        keyed, eager = keyed_functions(model, params), keyed_functions(model, params, streamed=False)
        _SETUPS[name] = {
            "model": model, "params": params, "x": data_for(model, 4), "keyed": keyed, "jitted": jax.jit(keyed),
            "vmapped": jax.vmap(keyed), "eager": eager,
            "deterministic": deterministic_functions(model, params),
        }  # fmt: skip
    return _SETUPS[name]


def keyed_functions(model, params, streamed=True):
    """Every keyed public function of one example or a batch, sharing the key (each splits a
    batch's key into the same per-example keys). ``streamed=False`` leaves out log_likelihood,
    whose chunk loop retraces at every call when run op by op."""

    def f(x, key):
        values = {
            "elbo": vae_jax.elbo(model, params, x, key),
            "iwae_bound": vae_jax.iwae_bound(model, params, x, key, k=3),
            "reconstruct": vae_jax.reconstruct(model, params, x, key),
        }
        if streamed:
            values["log_likelihood"] = vae_jax.log_likelihood(model, params, x, key, k=6, chunk_size=4)
        return values

    return f


def deterministic_functions(model, params):
    def f(x):
        mean, log_var = vae_jax.encode(model, params, x)
        return {"mean": mean, "log_var": log_var, "decoded": vae_jax.decode(model, params, mean)}

    return f


NAMED_FAMILIES = [(name, name) for name in sorted(FAMILIES)]
NAMED_LIKELIHOOD_FAMILIES = [(name, name) for name in sorted(LIKELIHOOD_FAMILIES)]
TOLERANCES = dict(rtol=2e-5, atol=1e-3)


def conformance_suite(named_families):
    """The conformance tests over ``named_families`` ((test name, family) pairs), as a test case."""

    class Suite(chex.TestCase):
        @chex.variants(with_jit=True, without_jit=True)
        @parameterized.named_parameters(*named_families)
        def test_vmap_and_single_examples_equal_the_batched_call_which_equals_jit(self, name):
            """The batched call (jitted once per family) is the reference: this variant's batched
            call, its vmap over single examples and its call on one example all equal it (op by op:
            the batched call of every function but the chunked log-likelihood, which the jitted
            variant covers)."""
            case = setup(name)
            x, key = case["x"], jax.random.key(2)
            keys = jax.random.split(key, x.shape[0])
            reference = case["jitted"](x, key)
            for value in jax.tree_util.tree_leaves(reference):
                assert value.shape[0] == x.shape[0]
            jitted = self.variant.type == chex.ChexVariantType.WITH_JIT
            f = case["keyed"] if jitted else case["eager"]
            reference = {fn: value for fn, value in reference.items() if jitted or fn != "log_likelihood"}
            chex.assert_trees_all_close(self.variant(f)(x, key), reference, **TOLERANCES)
            if jitted:  # op by op every primitive compiles on its own: the batched call stands for the rest
                chex.assert_trees_all_close(self.variant(case["vmapped"])(x, keys), reference, **TOLERANCES)
                one = jax.tree_util.tree_map(lambda a: a[1], reference)
                chex.assert_trees_all_close(self.variant(f)(x[1], keys[1]), one, **TOLERANCES)

        @chex.variants(with_jit=True, without_jit=True)
        @parameterized.named_parameters(*named_families)
        def test_encode_decode_sample_shapes_follow_the_declared_structure(self, name):
            case = setup(name)
            model, params, x = case["model"], case["params"], case["x"]
            out = self.variant(case["deterministic"])(x)
            want = jax.tree_util.tree_map(lambda t: (x.shape[0], *t.shape), model.latent_template)
            assert jax.tree_util.tree_map(jnp.shape, out["mean"]) == want
            assert jax.tree_util.tree_map(jnp.shape, out["log_var"]) == want
            assert out["decoded"].shape == (x.shape[0], *model.likelihood.params_shape(model.data_shape))
            one = self.variant(case["deterministic"])(x[1])
            chex.assert_trees_all_close(one, jax.tree_util.tree_map(lambda a: a[1], out), rtol=1e-5, atol=1e-5)
            draws = self.variant(lambda key: vae_jax.sample(model, params, key, num_samples=3))(jax.random.key(3))
            assert draws.shape == (3, *model.data_shape)

    return Suite


class ConformanceTest(conformance_suite(NAMED_FAMILIES)):
    @chex.variants(with_pmap=True)
    def test_pmap_gives_the_same_bounds(self):
        case = setup("mlp_bernoulli")
        reference = case["jitted"](case["x"], jax.random.key(4))
        chex.assert_trees_all_close(self.variant(case["keyed"])(case["x"], jax.random.key(4)), reference, **TOLERANCES)


@pytest.mark.slow
class LikelihoodConformanceTest(conformance_suite(NAMED_LIKELIHOOD_FAMILIES)):
    """The same over the coupled, local and cross-channel likelihoods (``LIKELIHOOD_FAMILIES``),
    whose fast case is ``test_likelihood_family_elbo_is_one_example_at_a_time_and_keyed``."""


@pytest.mark.parametrize("name", sorted(LIKELIHOOD_FAMILIES))
def test_likelihood_family_elbo_is_one_example_at_a_time_and_keyed(name):
    """The fast case of each likelihood family: the jitted ELBO of a batch is its vmap over single
    examples (a pixel's neighbours never reach into another example), the same key gives the
    same bits and another key other ones."""
    model = LIKELIHOOD_FAMILIES[name]()
    params, x = perturbed(vae_jax.init(model, KEY), 1), data_for(model, 3)
    elbo = jax.jit(lambda x, key: vae_jax.elbo(model, params, x, key))
    reference = elbo(x, jax.random.key(2))
    vmapped = jax.jit(jax.vmap(elbo))(x, jax.random.split(jax.random.key(2), 3))
    chex.assert_trees_all_close(vmapped, reference, **TOLERANCES)
    assert np.array_equal(elbo(x, jax.random.key(2)), reference)
    assert not np.array_equal(elbo(x, jax.random.key(3)), reference)


@pytest.mark.parametrize(
    "name", sorted(FAMILIES) + [pytest.param(name, marks=pytest.mark.slow) for name in sorted(LIKELIHOOD_FAMILIES)]
)
def test_same_key_is_bit_identical_and_different_keys_differ(name):
    case = setup(name)
    f, x = case["jitted"], case["x"]
    a, b, c = f(x, jax.random.key(5)), f(x, jax.random.key(5)), f(x, jax.random.key(6))
    for fn in a:
        assert np.array_equal(a[fn], b[fn]), fn
        assert not np.array_equal(a[fn], c[fn]), fn
    model, params = case["model"], case["params"]
    draw = lambda key: vae_jax.sample(model, params, key, num_samples=4)
    assert np.array_equal(draw(jax.random.key(3)), draw(jax.random.key(3)))
    assert not np.array_equal(draw(jax.random.key(3)), draw(jax.random.key(4)))


def test_elbo_is_its_terms_and_the_weighted_elbo_changes_only_the_kl():
    case = setup("hierarchical")
    model, params, x = case["model"], case["params"], case["x"]
    key = jax.random.key(1)
    terms = vae_jax.elbo_terms(model, params, x, key)
    np.testing.assert_allclose(vae_jax.elbo(model, params, x, key), terms.reconstruction - terms.kl, rtol=1e-6)
    np.testing.assert_allclose(sum(terms.kl_groups), terms.kl, rtol=1e-6)
    assert len(terms.kl_groups) == model.num_groups == 3
    np.testing.assert_allclose(
        vae_jax.weighted_elbo(terms, beta=0.5), terms.reconstruction - 0.5 * terms.kl, rtol=1e-6
    )
    floor = float(max(kl.max() for kl in terms.kl_groups)) + 1.0
    np.testing.assert_allclose(
        vae_jax.weighted_elbo(terms, free_bits=floor), terms.reconstruction - model.num_groups * floor, rtol=1e-6
    )


def test_decode_of_the_posterior_mean_is_the_deterministic_reconstruction_for_every_family():
    """encode gives each group's Gaussian along the path of posterior means; decoding that path
    is what the model's own top-down pass gives with every group at its posterior mean."""
    case = setup("hierarchical")
    model, params, x = case["model"], case["params"], case["x"]
    mean, _ = vae_jax.encode(model, params, x)
    at_mean = lambda g, posterior, prior: posterior[0]
    features = model.bottom_up_features(params, x)
    expected, _ = model._top_down(params, features, at_mean, x.shape[0])
    np.testing.assert_allclose(vae_jax.decode(model, params, mean), expected, rtol=1e-5, atol=1e-6)


def test_temperature_zero_samples_decode_the_prior_mean():
    model, params = setup("mlp_gaussian")["model"], setup("mlp_gaussian")["params"]
    means = vae_jax.sample(model, params, jax.random.key(1), num_samples=3, temperature=0.0, return_mean=True)
    at_zero = model.likelihood.mean(vae_jax.decode(model, params, jnp.zeros((3, 4))))
    np.testing.assert_allclose(means, at_zero, rtol=1e-6)


def test_grad_of_elbo_matches_finite_differences():
    model = vae_jax.mlp_vae(
        (5,), hidden=(7,), latent_dim=3, likelihood=vae_jax.Gaussian(0.3), activation="tanh", dtype=jnp.float64
    )
    key = jax.random.key(0)
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 5)))
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), vae_jax.init(model, key))
        loss = lambda p: -jnp.mean(vae_jax.elbo(model, p, x, key))
        grads = jax.grad(loss)(params)
        direction = jax.tree_util.tree_map(lambda a: jnp.asarray(np.random.default_rng(1).normal(size=a.shape)), params)
        eps = 1e-6
        shifted = lambda s: jax.tree_util.tree_map(lambda p, d: p + s * eps * d, params, direction)
        numerical = (loss(shifted(1.0)) - loss(shifted(-1.0))) / (2 * eps)
        analytic = sum(
            jnp.vdot(g, d) for g, d in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(direction))
        )
        assert float(analytic) == pytest.approx(float(numerical), rel=1e-6)
