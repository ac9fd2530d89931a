"""How one thing is timed: compile apart from steady state, warm-up, median of repeats,
``block_until_ready`` around every call; plus the machine facts every result is read against.

A measured function is compiled ahead of time (``jit(f).lower(*args).compile()``), so the
compile time is its own number and the XLA program whose FLOPs are counted is the program that
runs. Times are medians of single calls; the spread (25th and 75th percentiles) says how much
the machine drifted while we measured.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import resource
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class Timing:
    """Seconds per call: the median of ``repeats`` calls, and the 25th/75th percentiles."""

    median_s: float
    p25_s: float
    p75_s: float
    repeats: int

    def as_dict(self):
        return dataclasses.asdict(self)


def block(tree):
    """Wait for every array in ``tree``: JAX dispatch is asynchronous, a timer must not be."""
    return jax.block_until_ready(tree)


def time_calls(
    call: Callable[[], Any],
    *,
    seconds: float,
    min_repeats: int = 5,
    warmup: int = 2,
    max_repeats: int = 10_000,
) -> Timing:
    """Time ``call()`` (which returns arrays) until ``seconds`` have passed and at least
    ``min_repeats`` calls were timed, after ``warmup`` untimed calls.

    Slow calls get fewer repeats: when one call takes more than ``seconds / 3`` the minimum
    drops to 3 after one warm-up, and when the first call alone outlasts ``2 * seconds`` it is
    the only measurement (the program is compiled ahead of time, so what a first call adds,
    buffer allocation, is noise against a multi-second call)."""
    tick = time.perf_counter()
    block(call())
    first = time.perf_counter() - tick
    if first > 2 * seconds:
        return Timing(first, first, first, 1)
    if first > seconds / 3:
        warmup, min_repeats = 1, min(min_repeats, 3)
    for _ in range(warmup - 1):
        block(call())
    times = []
    start = time.perf_counter()
    while len(times) < max_repeats and (len(times) < min_repeats or time.perf_counter() - start < seconds):
        tick = time.perf_counter()
        block(call())
        times.append(time.perf_counter() - tick)
    p25, median, p75 = np.percentile(times, [25, 50, 75])
    return Timing(float(median), float(p25), float(p75), len(times))


def time_interleaved(
    calls: dict[str, Callable[[], Any]], *, seconds: float, rounds: int = 5, warmup: int = 2
) -> dict[str, Timing]:
    """Time several implementations A, B, C, A, B, C, ... in ``rounds`` rounds of about
    ``seconds / (rounds * len(calls))`` each, so slow drift of the machine (other jobs, clock
    changes) lands on every implementation alike rather than on whichever ran last."""
    for call in calls.values():
        for _ in range(warmup):
            block(call())
    times = {name: [] for name in calls}
    slot = seconds / (rounds * len(calls))
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            while True:
                tick = time.perf_counter()
                block(call())
                times[name].append(time.perf_counter() - tick)
                if time.perf_counter() - start >= slot:
                    break
    out = {}
    for name, values in times.items():
        p25, median, p75 = np.percentile(values, [25, 50, 75])
        out[name] = Timing(float(median), float(p25), float(p75), len(values))
    return out


@dataclasses.dataclass
class Compiled:
    """An ahead-of-time compiled function with what XLA says about it."""

    call: Any  # jax.stages.Compiled
    compile_s: float  # lower + compile, wall seconds
    flops: float | None  # XLA's count for one call of the whole program (see ``xla_flops``)
    temp_bytes: int | None  # XLA's scratch memory for one call


def compile_ahead(jitted, *args) -> Compiled:
    """``jitted.lower(*args).compile()``, timed, with its cost and memory analyses."""
    tick = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    compile_s = time.perf_counter() - tick
    return Compiled(compiled, compile_s, xla_flops(compiled), temp_bytes(compiled))


def xla_flops(compiled) -> float | None:
    """FLOPs XLA counts in a compiled program (one multiply-add = 2 FLOPs).

    In jax 0.10 ``Compiled.cost_analysis()`` returns a dict (older versions: a list with one
    dict per program). XLA counts a while loop's body once, whatever its trip count, so for
    programs with ``lax.scan`` callers must scale by hand (see ``suites``).
    """
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 -- backends raise different types where unimplemented
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"])


def xla_flops_lowered(lowered) -> float | None:
    """XLA's FLOP count of a lowered (not yet compiled) program: the HLO before optimization,
    so no compile is needed. Same loop caveat as ``xla_flops``."""
    try:
        analysis = lowered.cost_analysis()
    except Exception:  # noqa: BLE001 -- as in xla_flops
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    return float(analysis["flops"]) if analysis and "flops" in analysis else None


def temp_bytes(compiled) -> int | None:
    try:
        stats = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 -- as in xla_flops
        return None
    return None if stats is None else int(stats.temp_size_in_bytes)


# ---- memory -------------------------------------------------------------------------------


def host_peak_rss_mb() -> float:
    """This process's resident-set high-water mark so far (Linux reports ru_maxrss in KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if platform.system() != "Darwin" else peak / 2**20


def host_rss_mb() -> float | None:
    """Resident set size now, from /proc (None where there is no /proc)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def device_memory(device=None) -> dict | None:
    """``device.memory_stats()`` peak and current bytes in use, where the backend reports them
    (GPU and TPU do; XLA:CPU returns None)."""
    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 -- as in xla_flops
        return None
    if not stats:
        return None
    return {
        "peak_bytes_in_use": stats.get("peak_bytes_in_use"),
        "bytes_in_use": stats.get("bytes_in_use"),
        "bytes_limit": stats.get("bytes_limit"),
    }


# ---- the machine --------------------------------------------------------------------------


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def wait_for_quiet(max_load: float = 1.0, max_wait_s: float = 60.0, poll_s: float = 5.0, log=print) -> dict:
    """Wait (at most ``max_wait_s``) for the 1-minute load average to fall below ``max_load``,
    since other jobs on a small machine take cores from the timed code. Returns what happened."""
    start = time.perf_counter()
    load = load_average()
    while load is not None and load[0] >= max_load and time.perf_counter() - start < max_wait_s:
        log(f"  load average {load[0]:.2f} >= {max_load}: waiting...")
        time.sleep(poll_s)
        load = load_average()
    waited = time.perf_counter() - start
    return {"load_average": load, "waited_s": round(waited, 1), "quiet": load is None or load[0] < max_load}


def git_commit() -> str | None:
    """``git rev-parse --short HEAD``, plus ``-dirty`` when the working tree has changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def environment() -> dict:
    """Backend, devices, versions, CPU count, commit and load: what every result is read against."""
    import jaxlib

    import vae_jax

    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "devices": [str(d) for d in devices],
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "git_commit": git_commit(),
        "vae_jax_path": str(Path(vae_jax.__file__).parent),
        "load_average": load_average(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def environment_line(env: dict) -> str:
    """One line a benchmark prints first: the devices, the CPU, the commit and the load."""
    return (f"jax.devices(): {env['devices']}; CPU {env['cpu_model']} x {env['cpu_count']}; "
            f"commit {env['git_commit']}; load {env['load_average']}")  # fmt: skip


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# ---- the ceiling --------------------------------------------------------------------------


def matmul_ceiling(dtype=jnp.float32, n: int = 2048, seconds: float = 1.0) -> dict:
    """Achievable FLOP/s of this device: an ``n x n`` by ``n x n`` matmul (2 n^3 FLOPs) in
    ``dtype``, timed like everything else. Every row's FLOP/s is read as a fraction of it."""
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (n, n), dtype)
    b = jax.random.normal(key_b, (n, n), dtype)
    compiled = compile_ahead(jax.jit(jnp.matmul), a, b)
    timing = time_calls(lambda: compiled.call(a, b), seconds=seconds, min_repeats=5)
    flops = 2.0 * n**3
    return {
        "dtype": jnp.dtype(dtype).name,
        "n": n,
        "flops": flops,
        "xla_flops": compiled.flops,
        "seconds": timing.median_s,
        "flop_per_s": flops / timing.median_s,
        "timing": timing.as_dict(),
    }
