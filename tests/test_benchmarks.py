"""The benchmark harness: it runs, its JSON has the promised shape, and its FLOP counter agrees
with the exact count. Never a wall-clock assertion: the machine is shared."""

import json

import jax
import jax.numpy as jnp
import pytest

from benchmarks import cli, flops, suites, timing
from vae_jax import architectures, objectives

ENVIRONMENT_KEYS = {
    "backend",
    "device_kind",
    "device_count",
    "jax",
    "jaxlib",
    "cpu_count",
    "git_commit",
    "load_average",
}


def _run(tmp_path, *args):
    out = tmp_path / "rows.json"
    assert cli.main(["--quick", "--no-write", "--max-wait", "0", "--json", str(out), *args]) == 0
    return json.loads(out.read_text())


def _check_rows(results):
    assert results["schema"] == "vae-jax-benchmarks/1"
    assert ENVIRONMENT_KEYS <= set(results["environment"])
    assert results["environment"]["backend"] == jax.default_backend()
    assert results["ceilings"]["fp32"]["flop_per_s"] > 0
    assert results["rows"]
    for row in results["rows"]:
        assert "skipped" not in row, row
        assert set(suites.ROW_KEYS) <= set(row), set(suites.ROW_KEYS) - set(row)
        assert row["images_per_s"] > 0
        assert row["backend"] == jax.default_backend()
        assert row["repeats"] >= 1  # and images_per_s > 0 above: a finite, positive time per call
        assert row["command"].startswith("python -m benchmarks --only")


def test_train_step_row_and_its_flops(tmp_path):
    results = _run(tmp_path, "--only", "train_step", "--model", "mlp-784-400-20", "--batch-size", "16")
    _check_rows(results)
    (row,) = results["rows"]
    assert row["benchmark"] == "train_step" and row["batch_size"] == 16 and row["dtype"] == "float32"
    assert row["images_per_call"] == 16 * row["params"]["steps_per_dispatch"]
    # XLA's count adds the optimizer, the likelihood and the random bits to the matmuls.
    assert row["params"]["xla_over_analytic"] >= 1.0


def test_rows_name_their_dtype_and_bfloat16_is_read_against_its_own_ceiling(tmp_path):
    results = _run(tmp_path, "--only", "elbo", "--model", "mlp-784-400-20", "--batch-size", "8", "--dtype", "bfloat16")
    _check_rows(results)
    assert results["ceilings"]["bf16"]["dtype"] == "bfloat16"
    for row in results["rows"]:
        assert row["dtype"] == "bfloat16"
        assert row["ceiling_gflop_per_s"] == pytest.approx(results["ceilings"]["bf16"]["flop_per_s"] / 1e9)


def test_function_rows(tmp_path):
    results = _run(
        tmp_path,
        "--only",
        "encode",
        "--only",
        "elbo",
        "--only",
        "iwae",
        "--k",
        "50",
        "--model",
        "mlp-784-400-20",
        "--batch-size",
        "8",
    )
    _check_rows(results)
    assert [r["benchmark"] for r in results["rows"]] == ["encode", "elbo", "iwae_bound"]
    assert results["rows"][2]["params"]["k"] == 50


def test_log_likelihood_row(tmp_path):
    results = _run(tmp_path, "--only", "log_likelihood", "--model", "mlp-784-400-20", "--ll-images", "8")
    _check_rows(results)
    (row,) = results["rows"]
    assert row["params"]["k"] == 5000 and row["params"]["images"] == 8
    assert row["params"]["times_floor"] > 0


@pytest.mark.slow
def test_quick_suite_writes_json_markdown_and_png(tmp_path):
    assert (
        cli.main(
            [
                "--quick",
                "--max-wait",
                "0",
                "--out",
                str(tmp_path),
                "--only",
                "scaling_batch",
                "--only",
                "peers",
                "--model",
                "mlp-784-400-20",
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "results.json").read_text())
    # Without the optional torch peer (pip install -e ".[bench]") its row says so instead.
    no_torch = [r for r in results["rows"] if "torch not installed" in r.get("skipped", "")]
    results["rows"] = [r for r in results["rows"] if r not in no_torch]
    _check_rows(results)
    impls = {r["impl"] for r in results["rows"] if r["benchmark"] == "peers"}
    assert {"vae-jax", "flax"} <= impls and ("torch" in impls or no_torch)
    assert (tmp_path / "results.md").read_text().startswith("# vae-jax benchmarks")
    assert (tmp_path / "results_scaling.png").stat().st_size > 0


def test_a_run_writes_under_the_working_directory_and_only_record_touches_the_recorded_results(
    tmp_path, monkeypatch
):
    """Running the benchmarks in a clean clone leaves its tracked files as they are: without --out
    the results go to runs/benchmarks/ of the working directory; --record is the deliberate way
    to replace the repository's recorded results (and takes no --out, --quick or --no-write)."""
    recorded = sorted(p for p in cli.RECORDED.rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in recorded}
    monkeypatch.chdir(tmp_path)
    args = ["--quick", "--max-wait", "0", "--only", "elbo", "--model", "mlp-784-400-20", "--batch-size", "4"]
    assert cli.main(args) == 0
    assert json.loads((tmp_path / "runs/benchmarks/quick/results.json").read_text())["rows"]
    assert not (cli.RECORDED / "quick").exists()
    assert {p: p.stat().st_mtime_ns for p in recorded} == before
    for extra in (["--out", "x"], ["--quick"], ["--no-write"]):
        with pytest.raises(SystemExit):
            cli.parse_args(["--record", *extra])


def test_xla_flop_count_matches_the_exact_mlp_count():
    """The counter every FLOP/s figure rests on: XLA's count for the gradient of the ELBO of a
    small MLP VAE (256-128-8, batch 32) is the exact matmul count plus a few % of elementwise work."""
    data_dim, hidden, latent, batch = 256, 128, 8, 32
    model = architectures.mlp_vae((16, 16, 1), hidden=(hidden,), latent_dim=latent)
    params = model.init(jax.random.key(0))
    x = jnp.zeros((batch, 16, 16, 1))
    loss = lambda p: -jnp.mean(objectives.elbo(model, p, x, jax.random.key(1)))
    counted = timing.xla_flops(jax.jit(jax.grad(loss)).lower(params).compile())
    exact = flops.mlp_train_step_flops(batch, data_dim, hidden, latent)
    assert exact == 2 * batch * (3 * (256 * 128 + 128 * 16 + 8 * 128 + 128 * 256) - 256 * 128)
    assert counted == pytest.approx(exact, rel=0.04)
    assert counted >= exact


def test_xla_flops_of_a_matmul_and_the_ceiling():
    a = jnp.ones((64, 64))
    assert timing.xla_flops(jax.jit(jnp.matmul).lower(a, a).compile()) == 2 * 64**3
    ceiling = timing.matmul_ceiling(jnp.float32, 128, seconds=0.05)
    assert ceiling["flop_per_s"] > 0 and ceiling["dtype"] == "float32"


def test_environment_is_recorded():
    env = timing.environment()
    assert ENVIRONMENT_KEYS <= set(env)
    assert env["device_count"] == len(jax.devices())
    assert env["git_commit"] is None or len(env["git_commit"]) >= 7


def test_predictor_benchmark_scores_the_fitted_start_exactly(tmp_path):
    """``benchmarks.predictors``: the coupled predictor's bits/dim equal the sum, written out with
    the logistic CDF, of each sub-pixel's bin under the least-squares fit; the richer contexts cost
    no more; the command writes its rows."""
    import numpy as np
    import skimage.data
    from PIL import Image
    from scipy.special import expit

    from benchmarks import predictors
    from vae_jax import likelihood_fit

    photo = skimage.data.chelsea()[100:140, 150:200]
    fit = likelihood_fit.fit_context(photo[None], neighbours=False, previous_channels=True)
    x = 2.0 * photo.astype(np.float64) / 255.0 - 1.0
    coefficient = np.clip([fit.previous[1, 0], fit.previous[2, 0], fit.previous[2, 1]], -0.95, 0.95)
    means = [fit.offsets[0], fit.offsets[1] + coefficient[0] * x[..., 0],
             fit.offsets[2] + coefficient[1] * x[..., 0] + coefficient[2] * x[..., 1]]  # fmt: skip
    bits = 0.0
    for c in range(3):
        scale = np.exp(fit.log_scales[c])
        upper = np.where(photo[..., c] == 255, 1.0, expit((x[..., c] + 1 / 255 - means[c]) / scale))
        lower = np.where(photo[..., c] == 0, 0.0, expit((x[..., c] - 1 / 255 - means[c]) / scale))
        bits -= np.log2(upper - lower).sum()
    coupled = predictors.predictor_bits_per_dim(photo, predictors.CONTEXTS["coupled"])
    assert coupled == pytest.approx(bits / photo.size, rel=1e-4)
    local = predictors.predictor_bits_per_dim(photo, predictors.CONTEXTS["local"])
    cross = predictors.predictor_bits_per_dim(photo, predictors.CONTEXTS["local-cross"])
    assert cross < local < coupled
    path = tmp_path / "crop.png"
    Image.fromarray(photo).save(path)
    assert predictors.main([str(path), "--json", str(tmp_path / "rows.json")]) == 0
    row = json.loads((tmp_path / "rows.json").read_text())[0]
    assert row["coupled"] == pytest.approx(coupled) and row["png"] > 0 and row["webp"] > 0


@pytest.mark.slow
def test_round_trip_times_fresh_processes_and_checks_both_codecs(tmp_path, monkeypatch):
    """benchmarks.round_trip runs compress and decompress as fresh processes with the shipped
    model, checks the decoded pixels, and its table holds a row per image (JPEG-XL's cells "-"
    where cjxl is missing); without the binaries it never calls them."""
    import shutil

    import numpy as np
    from PIL import Image

    from benchmarks import round_trip

    image = tmp_path / "small.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)).save(image)
    if not (shutil.which("cjxl") and shutil.which("djxl")):
        monkeypatch.setattr(shutil, "which", lambda name: None)
    row = round_trip.round_trip(image, tmp_path, cold=True)
    assert row["size"] == "24x16" and row["vae"] == row["compress"] + row["decompress"] > 0
    assert row["vae_bits_per_dim"] == 8 * (tmp_path / "small.vae").stat().st_size / (16 * 24 * 3)
    table = round_trip.markdown([row]).splitlines()
    assert len(table) == 3 and table[2].startswith("| small.png | 24x16 |")
    assert ("jxl" in row) == bool(shutil.which("cjxl"))
