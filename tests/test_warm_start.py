"""Starting a run from another model's parameters: copied exactly, and a local likelihood grown
into the cross-channel one is, at step 0, the very same model."""

import jax
import numpy as np
import pytest

import vae_jax
from vae_jax import config as config_lib
from vae_jax import configured, runs, trained, warm_start

from conftest import perturbed, quiet, tiny_conv_config


def _conv(likelihood, patch_size):
    return vae_jax.conv_vae((8, 8, 3), widths=(8, 16), latent_channels=2, likelihood=likelihood, patch_size=patch_size)


def test_grown_output_layer_keeps_each_patch_positions_block_and_zeros_the_rest():
    source = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 12)  # 4 positions x 3 numbers
    grown = warm_start.grown_output_layer(source, (2, 20), 3, 5)
    blocks = grown.reshape(2, 4, 5)
    np.testing.assert_array_equal(blocks[..., :3], source.reshape(2, 4, 3))
    np.testing.assert_array_equal(blocks[..., 3:], 0)


@pytest.mark.parametrize("patch_size", [1, 2])
def test_local_grown_to_cross_channel_has_the_sources_elbo_exactly(patch_size):
    components = 2
    source_model = _conv(vae_jax.LocalAutoregressiveMixture(components), patch_size)
    grown_model = _conv(vae_jax.CrossChannelLocalMixture(components), patch_size)
    source_params = perturbed(vae_jax.init(source_model, jax.random.key(0)), scale=0.1, seed=1)
    fresh = vae_jax.init(grown_model, jax.random.key(5))
    grown_params = warm_start.transplant(fresh, source_params, grow_output=(22 * components, 34 * components))

    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3)).astype(np.uint8)
    x = vae_jax.data.prepare(images, "discrete")
    key = jax.random.key(3)
    expected = vae_jax.elbo(source_model, source_params, x, key)
    np.testing.assert_allclose(vae_jax.elbo(grown_model, grown_params, x, key), expected, rtol=1e-6)
    # The fresh cross-channel model is another model: the check above can fail.
    assert not np.allclose(vae_jax.elbo(grown_model, fresh, x, key), expected, rtol=1e-3)


def test_a_different_network_is_refused_naming_the_parameter():
    source = vae_jax.init(_conv(vae_jax.LocalAutoregressiveMixture(2), 1), jax.random.key(0))
    wider = vae_jax.conv_vae((8, 8, 3), widths=(8, 24), latent_channels=2, likelihood=vae_jax.LocalAutoregressiveMixture(2))
    with pytest.raises(warm_start.WarmStartError, match=r"init_from: .*\(.*16.*\) in the source and \(.*24.*\) here"):
        warm_start.transplant(vae_jax.init(wider, jax.random.key(0)), source)
    deeper = vae_jax.conv_vae((8, 8, 3), widths=(8, 16, 16), latent_channels=2, likelihood=vae_jax.LocalAutoregressiveMixture(2))
    with pytest.raises(warm_start.WarmStartError, match="other networks"):
        warm_start.transplant(vae_jax.init(deeper, jax.random.key(0)), source)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("local") / "run"
    runs.train(tiny_conv_config(likelihood="local", steps=2, eval_every=100, checkpoint_every=100), run_dir,
               progress=False, log=quiet)  # fmt: skip
    return run_dir


def test_a_run_started_from_another_begins_at_its_ema_params_and_trains(local_run, tmp_path):
    source = trained.load_run(local_run)
    config = tiny_conv_config(likelihood="local-cross", init_from=str(local_run), steps=2)
    data = configured.open_source(config)
    model = config_lib.build_model(config, data.image_shape)
    state = warm_start.initial_state(model, config, data)
    images = np.asarray(data.test_images()[:4])
    x = vae_jax.data.prepare(images, "discrete")
    key = jax.random.key(1)
    np.testing.assert_allclose(
        vae_jax.elbo(model, state.params, x, key), vae_jax.elbo(source.model, source.params, x, key), rtol=1e-6
    )
    runs.train(config, tmp_path / "grown", progress=False, log=quiet)
    assert trained.load_run(tmp_path / "grown").state.step == 2


@pytest.mark.parametrize(
    "init_from, message",
    [
        ("/no/such/run", r"^init_from: /no/such/run is not a run directory \(no such directory: train that run first\), nor pretrained:NAME$"),
        ("pretrained:nope", "no shipped model 'nope'"),
    ],
)
def test_a_missing_source_is_a_config_error(init_from, message, tmp_path):
    config = tiny_conv_config(likelihood="local", init_from=init_from)
    with pytest.raises(config_lib.ConfigError, match=message):
        runs.train(config, tmp_path / "run", progress=False, log=quiet)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_a_likelihood_that_cannot_grow_is_refused(local_run, tmp_path):
    config = tiny_conv_config(likelihood="coupled", init_from=str(local_run))
    with pytest.raises(config_lib.ConfigError, match="likelihood 'local' cannot become 'coupled'"):
        runs.train(config, tmp_path / "run", progress=False, log=quiet)
