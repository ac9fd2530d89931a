"""How noisy the two gradient estimators of the ELBO are, at a run's parameters.

    python -m benchmarks.gradient_variance RUN_DIR [--draws 2000] [--out FILE]

Both estimate the gradient of one objective, the ELBO of a batch. The closed-form estimator
(``training.elbo_loss``, this project's VAE) draws z ~ q(z|x) once and differentiates

    log p(x | z) - KL(q(z | x) || p(z))            (the KL of the top layer in closed form),

the one-sample estimator (``training.sampled_elbo_loss``, ``kl_estimate=sampled``; the IWAE loss
at k = 1; the VAE of Burda et al.'s code)

    log w = log p(x, z) - log q(z | x).

For one training batch of the run's batch size, each draw gives both gradients on one
binarization of the batch, each with its own z. Reported: the total
variance of each estimator over draws (the sum of the per-parameter variances), also per
parameter array, and the check that both estimate the same thing: the squared norm of the mean
difference of the two against its expectation under zero mean (its total variance / draws),
and the mean difference of the two losses with its standard error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import configured, trained, training

ESTIMATORS = ("closed_form_kl", "one_sample_log_w")


def _flat(tree):
    return jnp.concatenate([leaf.ravel() for leaf in jax.tree_util.tree_leaves(tree)])


def gradient_variance(run_dir: Path, draws: int = 2000, chunk: int = 100, seed: int = 0) -> dict:
    run = trained.load_run(run_dir)
    config = run.config
    likelihood_input = config.likelihood_input
    losses = {
        "closed_form_kl": training.elbo_loss(run.model, likelihood_input=likelihood_input),
        "one_sample_log_w": training.sampled_elbo_loss(run.model, likelihood_input=likelihood_input),
    }
    source = configured.open_source(config)
    batch = source.train_batch(0, config.batch_size, config.seed)
    step = jnp.asarray(0)
    names = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(run.params)]
    sizes = [leaf.size for leaf in jax.tree_util.tree_leaves(run.params)]

    def draw(key):
        # Both losses binarize the batch with the first half of ``key``: one binarization a pair.
        values_and_grads = {
            name: jax.value_and_grad(lambda p, loss=loss: loss(p, batch, key, step)[0])(run.params)
            for name, loss in losses.items()
        }
        return {name: (value, _flat(grad)) for name, (value, grad) in values_and_grads.items()}

    draw_chunk = jax.jit(jax.vmap(draw))
    # Running sums in float64: a few thousand draws of every parameter would not fit in memory.
    sums = {name: [0.0, 0.0] for name in (*ESTIMATORS, "difference")}
    loss_differences = []
    for start in range(0, draws, chunk):
        keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), start), min(chunk, draws - start))
        out = draw_chunk(keys)
        grads = {name: np.asarray(out[name][1], np.float64) for name in ESTIMATORS}
        grads["difference"] = grads["closed_form_kl"] - grads["one_sample_log_w"]
        for name, g in grads.items():
            sums[name][0] = sums[name][0] + g.sum(0)
            sums[name][1] = sums[name][1] + (g**2).sum(0)
        loss_differences.append(np.asarray(out["closed_form_kl"][0] - out["one_sample_log_w"][0], np.float64))
    variance = {name: s2 / draws - (s1 / draws) ** 2 for name, (s1, s2) in sums.items()}
    bounds = np.cumsum([0, *sizes])
    loss_differences = np.concatenate(loss_differences)
    mean_difference = sums["difference"][0] / draws
    return {
        "run": str(run_dir),
        "step": int(run.state.step),
        "draws": draws,
        "batch_size": config.batch_size,
        "total_variance": {name: float(variance[name].sum()) for name in ESTIMATORS},
        "variance_by_parameter": {
            name: {names[i]: float(variance[name][bounds[i] : bounds[i + 1]].sum()) for i in range(len(names))}
            for name in ESTIMATORS
        },
        "same_expectation": {
            "squared_norm_of_mean_gradient_difference": float(np.sum(mean_difference**2)),
            "its_expectation_if_zero_mean": float(variance["difference"].sum() / draws),
            "mean_loss_difference": float(loss_differences.mean()),
            "its_standard_error": float(loss_differences.std() / np.sqrt(draws)),
        },
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gradient_variance", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the result here (JSON)")
    args = parser.parse_args(argv)
    try:
        result = gradient_variance(args.run_dir, args.draws, seed=args.seed)
    except trained.LoadError as error:
        raise SystemExit(str(error)) from None
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
