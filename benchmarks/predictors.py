"""Bits/dim of the least-squares predictor each local likelihood starts from, on whole photographs:
how much a context is worth before any latent, measured with the library's own fit and
likelihoods (one logistic per sub-pixel, its scale fitted to the photograph's residuals).

    python -m benchmarks.predictors photo.png [more.png ...] [--json out.json]

For each photograph and each context (``coupled``: the pixel's earlier channels; ``local``: also
each channel's own four causal neighbours; ``local-cross``: also the earlier channels'
neighbours) it fits ``likelihood_fit.fitted_output_bias`` on the photograph itself and scores the
photograph under that likelihood with the fitted bias at every pixel: -log2 p(x) / (H W 3).
PNG and WebP-lossless of the same photograph stand beside it.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from vae_jax import images, likelihood_fit, likelihoods, photo_eval

CONTEXTS = {
    "coupled": likelihoods.CoupledLogisticMixture(1),
    "local": likelihoods.LocalAutoregressiveMixture(1),
    "local-cross": likelihoods.CrossChannelLocalMixture(1),
}


def predictor_bits_per_dim(photo: np.ndarray, likelihood) -> float:
    """-log2 p(photo) / dims under ``likelihood`` at its least-squares start fitted on ``photo``."""
    bias = likelihood_fit.fitted_output_bias(likelihood, photo[None])
    out = jnp.broadcast_to(jnp.asarray(bias, jnp.float32), (*photo.shape[:2], bias.size))
    log_prob = likelihood.log_prob_sum(jnp.asarray(photo, jnp.int32), out, 3)
    return -float(log_prob) / (photo.size * math.log(2.0))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.predictors", description=__doc__.split("\n\n")[0])
    parser.add_argument("photos", nargs="+", type=Path, help="RGB photographs (PNG, JPEG, ...)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    rows = []
    print("| photo | " + " | ".join(CONTEXTS) + " | PNG | WebP |")
    print("| --- |" + " ---: |" * (len(CONTEXTS) + 2))
    for path in args.photos:
        photo = images.load_image(path, 3)
        row = {"photo": path.name, **{name: predictor_bits_per_dim(photo, lik) for name, lik in CONTEXTS.items()}}
        for codec in photo_eval.CODECS:
            row[codec] = 8 * photo_eval.encoded_bytes(photo, codec) / photo.size
        rows.append(row)
        print(f"| {row['photo']} | " + " | ".join(f"{row[k]:.3f}" for k in [*CONTEXTS, *photo_eval.CODECS]) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
