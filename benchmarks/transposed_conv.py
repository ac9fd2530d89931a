"""The lossy codec's synthesis transform with flax's dilated-input transposed convolutions against
the sub-pixel ones it uses, forward and gradient, timed interleaved on whatever ``jax.devices()`` offers.

    python -m benchmarks.transposed_conv                 # batch 4 of 256x256, the training crops
    python -m benchmarks.transposed_conv --batch 1 --side 512 --repeats 5

Both compute the same function from the same parameters (``tests/test_subpixel.py``); the rows
say what each costs, and the largest difference between their outputs.
"""

from __future__ import annotations

import argparse
import sys
import time


def synthesis_of(layer):
    """The codec's synthesis transform (``vae_jax.networks.hyperprior.Synthesis``) built on ``layer``,
    a function ``(features, index) -> module`` computing a 5x5 stride-2 transposed convolution."""
    import flax.linen as nn

    from vae_jax.networks.gdn import GDN

    class Synthesis(nn.Module):
        width: int
        out_channels: int = 3

        @nn.compact
        def __call__(self, y):
            for i in range(3):
                y = GDN(inverse=True)(layer(self.width, i)(y))
            return layer(self.out_channels, 3)(y)

    return Synthesis


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.transposed_conv", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--side", type=int, default=256, help="image side (a multiple of 16)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from benchmarks import timing
    from vae_jax.networks.subpixel import SubpixelConvTranspose

    print(timing.environment_line(timing.environment()))
    implementations = {
        "flax ConvTranspose (dilated input)": synthesis_of(
            lambda features, i: nn.ConvTranspose(features, (5, 5), strides=(2, 2), name=f"ConvTranspose_{i}")
        ),
        "SubpixelConvTranspose": synthesis_of(
            lambda features, i: SubpixelConvTranspose(features, 5, 2, name=f"ConvTranspose_{i}")
        ),
    }
    y = jax.random.normal(jax.random.key(0), (args.batch, args.side // 16, args.side // 16, 96))
    params = next(iter(implementations.values()))(64).init(jax.random.key(1), y)
    programs, outputs = {}, {}
    for name, module in implementations.items():
        network = module(64)
        forward = jax.jit(network.apply)
        gradient = jax.jit(jax.grad(lambda p, y, network=network: jnp.sum(jnp.square(network.apply(p, y)))))
        outputs[name] = jax.block_until_ready(forward(params, y))
        jax.block_until_ready(gradient(params, y))
        programs[name] = {"forward": forward, "gradient": gradient}
    seconds = {(name, kind): [] for name in programs for kind in ("forward", "gradient")}
    for _ in range(args.repeats):  # interleaved, so both see the same machine
        for name, kinds in programs.items():
            for kind, program in kinds.items():
                started = time.perf_counter()
                jax.block_until_ready(program(params, y))
                seconds[(name, kind)].append(time.perf_counter() - started)
    dilated, subpixel = outputs.values()
    difference = float(jnp.max(jnp.abs(dilated - subpixel)))
    print(f"synthesis transform, N=64, M=96, batch {args.batch} of {args.side}x{args.side}, "
          f"median of {args.repeats}; outputs differ by at most {difference:.2e}")  # fmt: skip
    print("| transposed convolution | forward s | gradient s |")
    print("|---|---:|---:|")
    for name in programs:
        forward, gradient = (
            sorted(seconds[(name, kind)])[len(seconds[(name, kind)]) // 2] for kind in ("forward", "gradient")
        )
        print(f"| {name} | {forward:.3f} | {gradient:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
