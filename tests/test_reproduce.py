"""The Burda et al. reproduction command (``benchmarks.reproduce``) on a small made-up MNIST: a
row trains, resumes, evaluates and reports; training time is split by the device each stretch
of steps ran on; ablations and every row's estimate; the two ELBO gradient estimators
(``benchmarks.gradient_variance``) agree in expectation."""

import dataclasses
import json
import time

import numpy as np
import pytest
from test_data import write_idx_dataset

from benchmarks import gradient_variance, reproduce
from vae_jax import runs


def _strokes(num, seed):
    """28x28 grey images of a random bar each: something a Bernoulli decoder can learn."""
    rng = np.random.default_rng(seed)
    images = np.zeros((num, 28, 28), np.uint8)
    for image, row, col in zip(images, rng.integers(4, 24, num), rng.integers(4, 24, num)):
        image[row - 3 : row + 3, col - 1 : col + 1] = 255
        image[row, :] = 128
    return images


@pytest.mark.slow
def test_a_row_trains_resumes_evaluates_and_reports(tmp_path, monkeypatch):
    # Three steps a dispatch, logged every three: the first dispatch compiles and is not timed.
    real_row_config = reproduce.row_config
    monkeypatch.setattr(
        reproduce,
        "row_config",
        lambda *args: dataclasses.replace(real_row_config(*args), steps_per_dispatch=3, log_every=3),
    )
    data = write_idx_dataset(tmp_path / "mnist", _strokes(60, 0), _strokes(30, 1), gz=True)
    out = tmp_path / "out"
    row = ["iwae-mnist", "--row", "iwae-1layer-k5", "--data", f"idx:{data}", "--out-dir", str(out), "--no-progress"]
    assert reproduce.main([*row, "--steps", "6", "--k", "20"]) == 0
    # Longer: the command resumes the run at its step 6 rather than starting again.
    assert reproduce.main([*row, "--steps", "9", "--k", "20"]) == 0
    result = json.loads((out / "iwae-1layer-k5" / "reproduction.json").read_text())
    assert result["step"] == 9 and result["epochs"] == 9 * 20 / 60
    assert result["num_test_images"] == 30 and result["nll_samples"] == 20
    # log p(x) >= L_20 >= ELBO in expectation: the k=20 NLL estimate sits below the -ELBO.
    assert result["test_nll_nats"] < result["test_elbo_nats"]
    assert len(result["active_units"]) == 1 and 0 <= result["active_units"][0] <= 50
    assert len(result["training_sessions"]) == 2
    assert set(result["training_seconds_by_device"]) == {"cpu"}
    assert np.isclose(sum(result["training_seconds_by_device"].values()), result["training_seconds"])
    # Another key draws another binarization of the test set: the same run, another figure.
    other = reproduce.evaluate_row(out / "iwae-1layer-k5", 20, 100, key_seed=7)
    assert other["step"] == 9 and other["test_nll_nats"] != result["test_nll_nats"]
    assert reproduce.evaluate_row(out / "iwae-1layer-k5", 20, 100)["test_nll_nats"] == result["test_nll_nats"]
    # Another seed trains another run beside it, which the report leaves out.
    assert reproduce.main([*row, "--steps", "3", "--k", "5", "--seed", "1"]) == 0
    seeded = json.loads((out / "iwae-1layer-k5-seed1" / "reproduction.json").read_text())
    assert seeded["step"] == 3 and seeded["seed"] == 1 and result["seed"] == 0
    assert json.loads((out / "iwae-1layer-k5-seed1" / "config.json").read_text())["seed"] == 1
    # A changed setting trains an ablation beside it, from the same seed.
    assert reproduce.main([*row, "--steps", "3", "--k", "5", "--set", "adam_eps=5e-6"]) == 0
    ablation = json.loads((out / "iwae-1layer-k5-adam_eps=5e-06" / "reproduction.json").read_text())
    assert ablation["settings"] == {"adam_eps": 5e-6} and ablation["seed"] == 0 and result["settings"] == {}
    assert json.loads((out / "iwae-1layer-k5-adam_eps=5e-06" / "config.json").read_text())["adam_eps"] == 5e-6
    # A run stopped before its end is listed with how far it got.
    (out / "vae-2layer-k1").mkdir()
    (out / "vae-2layer-k1" / "config.json").write_text(json.dumps({"steps": 900}))
    records = [{"split": "train", "step": 300}, {"split": "test", "step": 300, "elbo": -99.5}, {"split": "train", "step": 330}]
    (out / "vae-2layer-k1" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    report = reproduce.report(out)
    assert "| vae-2layer-k1 | 85.33 | not finished, below |" in report
    assert "| vae-2layer-k1 | 330 | 900 | -99.50 | 300 |" in report
    assert f"| iwae-1layer-k5 | 85.54 | {result['test_nll_nats']:.2f} |" in report
    assert "| vae-1layer-k1 | 86.76 | not run |" in report
    # The seed and the ablation are listed apart from the rows, each once.
    assert report.count("| iwae-1layer-k5-seed1 | iwae-1layer-k5 | 1 | - | 85.54 |") == 1
    assert report.count("| iwae-1layer-k5-adam_eps=5e-06 | iwae-1layer-k5 | 0 | adam_eps=5e-06 | 85.54 |") == 1


@pytest.mark.slow
def test_the_two_elbo_gradient_estimators_agree_in_expectation(tmp_path):
    data = write_idx_dataset(tmp_path / "mnist", _strokes(60, 0), _strokes(30, 1), gz=True)
    config = reproduce.row_config("vae-1layer-k1", f"idx:{data}", 2)
    runs.train(dataclasses.replace(config, steps_per_dispatch=2), tmp_path / "run", progress=False)
    result = gradient_variance.gradient_variance(tmp_path / "run", draws=300)
    same = result["same_expectation"]
    # Unbiased both: the mean difference is noise (its squared norm about its expectation, the
    # loss difference within four standard errors), not a systematic gap.
    assert same["squared_norm_of_mean_gradient_difference"] < 2 * same["its_expectation_if_zero_mean"]
    assert abs(same["mean_loss_difference"]) < 4 * same["its_standard_error"]
    # The closed-form KL takes the KL's noise out of the encoder's gradient, and only there: the
    # decoder's gradient does not see the KL term.
    closed, sampled = (result["variance_by_parameter"][name] for name in gradient_variance.ESTIMATORS)
    sigma = "['encoder']['q_1']['log_sigma']['kernel']"
    assert closed[sigma] < sampled[sigma]
    decoder = [name for name in closed if name.startswith("['decoder']")]
    assert decoder and all(np.isclose(closed[name], sampled[name], rtol=0.2) for name in decoder)


def test_settings_name_their_run_directory_and_cannot_redefine_the_row(tmp_path):
    settings = {"adam_eps": 5e-6, "adam_b1": 0.99}
    assert reproduce.run_directory(tmp_path, "vae-1layer-k1", None, settings).name == (
        "vae-1layer-k1-adam_b1=0.99-adam_eps=5e-06"
    )
    assert reproduce.run_directory(tmp_path, "vae-1layer-k1", 2, settings).name == (
        "vae-1layer-k1-seed2-adam_b1=0.99-adam_eps=5e-06"
    )
    config = reproduce.row_config("vae-1layer-k1", "idx:DIR", settings=settings)
    assert (config.adam_eps, config.adam_b1, config.objective, config.k) == (5e-6, 0.99, "elbo", 1)
    for field in ("k", "objective", "seed", "steps"):
        with pytest.raises(SystemExit, match=f"--set {field}"):
            reproduce.row_config("vae-1layer-k1", "idx:DIR", settings={field: 1})
    with pytest.raises(SystemExit):
        reproduce.main(["iwae-mnist", "--row", "vae-1layer-k1", "--set", "adam_epsilon=1e-8"])
    # A setting the row cannot take is refused before anything trains, naming it.
    with pytest.raises(SystemExit, match="kl_estimate"):
        reproduce.row_config("iwae-1layer-k5", "idx:DIR", settings={"kl_estimate": "sampled"})
    assert reproduce.row_config("vae-1layer-k5", "idx:DIR", settings={"kl_estimate": "sampled"}).k == 5


def test_training_time_is_split_by_the_device_each_stretch_ran_on(tmp_path):
    def stamp(text):
        return time.mktime(time.strptime(text, "%Y-%m-%d %H:%M:%S"))

    sessions = [
        {"time": "2026-11-26 10:00:00", "machine": {"device": "cpu"}},
        {"time": "2026-11-26 11:00:00", "machine": {"device": "gpu"}},
        {"time": "2026-11-26 12:00:00", "machine": {"device": "cpu"}},
    ]
    records = [
        {"split": "train", "step": 100, "steps_per_s": 10.0, "time": stamp("2026-11-26 10:10:00")},
        {"split": "test", "step": 100, "time": stamp("2026-11-26 10:10:01")},
        {"split": "train", "step": 200, "steps_per_s": 20.0, "time": stamp("2026-11-26 10:20:00")},
        {"split": "train", "step": 1200, "steps_per_s": 1000.0, "time": stamp("2026-11-26 11:00:05")},
        {"split": "train", "step": 1300, "steps_per_s": 50.0, "time": stamp("2026-11-26 12:30:00")},
    ]
    (tmp_path / "sessions.json").write_text(json.dumps(sessions))
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    by_device = reproduce._training_seconds(tmp_path, by_device=True)
    assert by_device == {"cpu": 100 / 10 + 100 / 20 + 100 / 50, "gpu": 1000 / 1000}
    assert reproduce._training_seconds(tmp_path) == 10 + 5 + 2 + 1
    # The report's wall column names each device of a run that moved, and only then.
    moved = {"training_seconds": 7200.0, "evaluation_seconds": 360.0, "training_seconds_by_device": {"cpu": 5400.0, "gpu": 1800.0}}
    machines = set()
    assert reproduce._wall(moved, machines) == "2.1 h (training: 1.50 h cpu, 0.50 h gpu)"
    assert machines == {"cpu", "gpu"}
    assert reproduce._wall({**moved, "training_seconds_by_device": {"cpu": 7200.0}}, machines) == "2.1 h"


def test_estimate_of_every_row_times_each_one(tmp_path, monkeypatch, capsys):
    real_row_config = reproduce.row_config
    monkeypatch.setattr(
        reproduce, "row_config", lambda *args: dataclasses.replace(real_row_config(*args), steps_per_dispatch=2)
    )
    rows = {name: reproduce.IWAE_MNIST_ROWS[name] for name in ("vae-1layer-k1", "iwae-1layer-k5")}
    monkeypatch.setattr(reproduce, "IWAE_MNIST_ROWS", rows)
    data = write_idx_dataset(tmp_path / "mnist", _strokes(60, 0), _strokes(30, 1), gz=True)
    assert reproduce.main(["iwae-mnist", "--row", "all", "--estimate", "--data", f"idx:{data}", "--steps", "40"]) == 0
    estimates = json.loads(capsys.readouterr().out)
    assert list(estimates) == list(rows)
    for name, timed in estimates.items():
        assert timed["row"] == name and timed["steps"] == 40
        assert np.isclose(timed["expected_training_hours"], timed["seconds_per_step"] * 40 / 3600)
    with pytest.raises(SystemExit):
        reproduce.main(["iwae-mnist", "--row", "all", "--data", f"idx:{data}"])
