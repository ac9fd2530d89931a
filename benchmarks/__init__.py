"""Benchmarks of vae-jax: per-function timings, scaling curves, FLOP/s against a measured matmul
ceiling, and peers (PyTorch, plain Flax) side by side. Run ``python -m benchmarks --help``.

Modules: ``timing`` (how a thing is timed, the machine facts), ``models`` (what is timed),
``flops`` (exact MLP FLOP counts), ``suites`` (the benchmarks), ``peers_torch`` / ``peers_flax``
(the peers), ``report`` (Markdown and PNG), ``cli`` (the command line). ``likelihood`` is a
separate tool: bits/dim of trained runs next to PNG and WebP (``python -m benchmarks.likelihood``).
"""
