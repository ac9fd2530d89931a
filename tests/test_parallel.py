"""Data-parallel training on 4 CPU devices matches single-device training with the same global batch.

XLA fixes the number of host devices when JAX starts, so the check runs in a fresh interpreter
with XLA_FLAGS=--xla_force_host_platform_device_count=4.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys, tempfile
    import jax, numpy as np
    from vae_jax import config as config_lib, runs, trained

    assert len(jax.devices()) == 4, jax.devices()
    results = {}
    for name, overrides in {
        "mlp": dict(data="photos", crop_size=8, model="mlp", likelihood="gaussian", obs_var=0.05,
                    hidden=(32,), latent_dim=4, steps_per_dispatch=5),
        # Convolutional dispatches are unrolled: one step each keeps the compilation small.
        "conv": dict(crop_size=16, widths=(8, 16), latent_channels=2, mixture_components=2, steps_per_dispatch=1),
    }.items():
        if name not in sys.argv[1:]:
            continue
        config = config_lib.preset("photos", dict(overrides, batch_size=16, steps=5,
                                                  eval_every=0, checkpoint_every=0, log_every=5))
        params = {}
        for devices in (1, 4):
            with tempfile.TemporaryDirectory() as tmp:
                runs.train(config, f"{tmp}/run", progress=False, log=lambda *_: None, devices=devices)
                state = trained.load_run(f"{tmp}/run").state
                params[devices] = [np.asarray(a) for a in jax.tree_util.tree_leaves(state.params)]
        worst = max(float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) + 1e-12)) for a, b in zip(params[1], params[4]))
        identical = all(np.array_equal(a, b) for a, b in zip(params[1], params[4]))
        results[name] = {"worst_relative_difference": worst, "identical": identical}
    print(json.dumps(results))
    """
)


@pytest.mark.parametrize("family", ["mlp", pytest.param("conv", marks=pytest.mark.slow)])
def test_four_device_training_matches_single_device(family):
    """The dense model in the default selection; the conv model (a minute of compiling) is slow."""
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, family], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(results) == {family}
    for name, result in results.items():
        # Same global batch and keys: only the order of the gradient's batch sum differs.
        assert result["worst_relative_difference"] < 1e-4, (name, result)


def test_mesh_refuses_more_devices_than_exist():
    import jax
    import pytest

    from vae_jax import parallel

    with pytest.raises(ValueError, match="devices: asked for"):
        parallel.make_mesh(len(jax.devices()) + 1)
