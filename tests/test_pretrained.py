"""The shipped model: export a run, load it back bit for bit, and refuse altered files."""

import json
import re

import jax
import numpy as np
import pytest
from conftest import quiet, tiny_conv_config

import vae_jax
from vae_jax import config as config_lib
from vae_jax import pretrained, runs, trained
from vae_jax.dataset_evaluation import evaluate_elbo


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    runs.train(tiny_conv_config(steps=2, eval_every=0, checkpoint_every=0), root / "run", progress=False, log=quiet)
    folder = pretrained.export(root / "run", "tiny", command="vae-jax train ...", commit="abc", directory=root / "tiny")
    return root / "run", folder


@pytest.mark.slow
def test_export_and_load_give_the_runs_model_and_ema_params(exported):
    run_dir, folder = exported
    run = trained.load_run(run_dir)
    shipped = pretrained.load("tiny", directory=folder)
    assert shipped.model == run.model and shipped.config == run.config
    for a, b in zip(jax.tree_util.tree_leaves(shipped.params), jax.tree_util.tree_leaves(run.params)):
        np.testing.assert_array_equal(a, b)
    assert shipped.provenance["command"] == "vae-jax train ..." and shipped.provenance["step"] == 2
    x = np.random.default_rng(0).integers(0, 256, (3, *run.model.data_shape))
    key = jax.random.key(0)
    np.testing.assert_array_equal(
        vae_jax.elbo(shipped.model, shipped.params, x, key), vae_jax.elbo(run.model, run.params, x, key)
    )


def test_altered_or_missing_files_are_refused(exported, tmp_path):
    _, folder = exported
    for file in folder.iterdir():
        (tmp_path / file.name).write_bytes(file.read_bytes())
    params = tmp_path / "params.msgpack"
    params.write_bytes(params.read_bytes()[:-10])
    with pytest.raises(trained.LoadError, match="does not match the SHA-256"):
        pretrained.load("tiny", directory=tmp_path)
    params.unlink()
    with pytest.raises(trained.LoadError, match="params.msgpack is missing"):
        pretrained.load("tiny", directory=tmp_path)
    with pytest.raises(trained.LoadError, match="no shipped model 'nope'"):
        pretrained.load("nope")


@pytest.mark.skipif(not pretrained.available(), reason="no model shipped in this checkout")
def test_the_shipped_model_measures_what_its_provenance_says():
    """The shipped parameters give, on the held-out chelsea tiles, the ELBO recorded when they were
    exported (a changed likelihood, network or loader would move it)."""
    from vae_jax.data.crops import tiles
    from vae_jax.data.photos import load_photos

    shipped = pretrained.load()
    recorded = shipped.provenance["measured"]["chelsea_elbo_bits_per_dim"]
    x = tiles(load_photos()["chelsea"], shipped.model.data_shape[0])
    result = evaluate_elbo(shipped.model, shipped.params, x, jax.random.key(0),
                           likelihood_input=shipped.config.likelihood_input, batch_size=128)  # fmt: skip
    assert abs(result["bits_per_dim"] - recorded) < 0.02, json.dumps(shipped.provenance)


def test_float16_storage_loads_as_float32_rounded_params(exported, tmp_path):
    run_dir, _ = exported
    folder = pretrained.export(run_dir, "half", directory=tmp_path / "half", dtype="float16")
    shipped = pretrained.load("half", directory=folder)
    run = trained.load_run(run_dir)
    for a, b in zip(jax.tree_util.tree_leaves(shipped.params), jax.tree_util.tree_leaves(run.params)):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, np.asarray(b, np.float16).astype(np.float32))
    assert shipped.provenance["stored_dtype"] == "float16"
    with pytest.raises(ValueError, match="dtype"):
        pretrained.export(run_dir, "x", directory=tmp_path / "x", dtype="bfloat16")


@pytest.mark.skipif(not pretrained.available(), reason="no model shipped in this checkout")
def test_the_shipped_model_is_its_presets_configuration():
    """``photos-hvae-cross`` reproduces the shipped model's run (README): the same configuration,
    but for its start (a run directory there, the model shipped before it here)."""
    import dataclasses

    shipped = dataclasses.asdict(pretrained.load().config)
    preset = dataclasses.asdict(config_lib.preset("photos-hvae-cross"))
    differing = {k for k in shipped if shipped[k] != preset[k]}
    assert differing == {"init_from"}, {k: (shipped[k], preset[k]) for k in differing}


def test_one_loader_gives_runs_and_shipped_models_as_one_record(exported):
    """``trained.load`` reads a run directory and a shipped folder into the same record; the
    commands tell them apart by ``source_kind`` (where they write by default), not by type."""
    import argparse
    from pathlib import Path

    from vae_jax import cli

    run_dir, folder = exported
    run = trained.load(str(run_dir))
    shipped = trained.load_shipped("tiny", directory=folder)
    assert type(run) is type(shipped) is trained.TrainedModel
    assert (run.source_kind, run.name, run.directory, run.step) == ("run", "run", run_dir, 2)
    assert run.params is run.state.ema_params and int(run.state.step) == 2
    assert (shipped.source_kind, shipped.directory, shipped.step, shipped.state) == ("pretrained", folder, 2, None)
    no_out_dir = argparse.Namespace(out_dir=None)
    assert cli._out_dir(no_out_dir, run, "samples") == run_dir / "samples"
    assert cli._out_dir(no_out_dir, shipped, "samples") == Path("samples")  # never inside the package


def test_a_spec_that_names_no_model_is_refused_naming_it(tmp_path):
    with pytest.raises(trained.LoadError, match=r"^/no/such is not a run directory \(no such directory: train "
                                                r"that run first\), nor pretrained:NAME$"):  # fmt: skip
        trained.load("/no/such")
    missing = re.escape(f"{tmp_path} is not a run directory: {tmp_path}/config.json is missing")
    with pytest.raises(trained.LoadError, match=f"^{missing}$"):
        trained.load(str(tmp_path))
    with pytest.raises(trained.LoadError, match="^no shipped model 'nope'"):
        trained.load("pretrained:nope")


@pytest.mark.skipif(not pretrained.available(), reason="no model shipped in this checkout")
def test_the_default_and_pretrained_name_load_the_shipped_model():
    default, named, public = trained.load(), trained.load(f"pretrained:{pretrained.DEFAULT}"), pretrained.load()
    assert default.name == named.name == public.name == pretrained.DEFAULT
    assert default.source_kind == "pretrained" and default.step == default.provenance["step"]
    for a, b, c in zip(*(jax.tree_util.tree_leaves(m.params) for m in (default, named, public))):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
