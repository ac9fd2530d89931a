"""The benchmarks: each a function ``(settings, model_name) -> rows`` that times the library's
real functions (``vae_jax.objectives``, ``vae_jax.evaluation``, ``vae_jax.training``), never a
copy. A row is a flat dict; ``ROW_KEYS`` lists the keys every row has."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import flops as flops_lib
from benchmarks import timing
from benchmarks.models import MODELS, Skip, build, synthetic_images, test_images
from vae_jax import batching, configured, evaluation, objectives
from vae_jax.images import prepare

ROW_KEYS = (
    "benchmark",
    "model",
    "impl",
    "dtype",
    "batch_size",
    "images_per_call",
    "seconds_per_call",
    "p25_s",
    "p75_s",
    "repeats",
    "images_per_s",
    "compile_s",
    "flops_per_call",
    "flops_source",
    "gflop_per_s",
    "ceiling_gflop_per_s",
    "fraction_of_ceiling",
    "host_peak_rss_mb",
    "device_memory",
    "xla_temp_bytes",
    "params",
    "note",
    "command",
)

# How many posterior samples a model may hold at once in ``iwae_bound`` (which keeps all k):
# above this the batch shrinks; ``log_likelihood`` is the tool for large k.
SAMPLES_AT_ONCE = {"mlp": 65536, "conv": 512, "hvae": 256}


@dataclasses.dataclass
class Settings:
    seconds: float = 2.0  # timed seconds per row (after compile and warm-up)
    quick: bool = False
    batch_size: int | None = None  # None: the model's config
    k: int | None = None  # only this k for iwae
    ll_images: int = 10_000  # test images for the main model's log-likelihood
    ll_k: int = 5000
    ll_chunk_size: int | None = None  # None: the library's default
    ll_batch_size: int = 8  # 8 images x 500 samples a chunk: the chunk's logits stay in cache
    ll_budget_s: float | None = None  # stop a log-likelihood pass after this many seconds
    memory_limit_bytes: int = 4 << 30  # skip a row whose XLA scratch memory exceeds this
    ceiling_flop_per_s: float | None = None  # fp32 matmul ceiling of this run
    compute_dtype: str = "float32"  # the networks' matmul/conv dtype ("bfloat16" on accelerators)
    torch_one_thread_row: bool = True
    log: Callable = print

    @property
    def min_repeats(self):
        return 3 if self.quick else 5


def _command(benchmark, model=None, batch_size=None, seconds=None, extra=""):
    parts = ["python -m benchmarks --only", benchmark]
    if model:
        parts += ["--model", model]
    if batch_size:
        parts += ["--batch-size", str(batch_size)]
    if seconds:
        parts += ["--seconds", f"{seconds:g}"]
    if extra:
        parts.append(extra)
    return " ".join(parts)


def make_row(
    settings: Settings,
    benchmark: str,
    model: str,
    *,
    batch_size,
    images_per_call,
    t: timing.Timing,
    compile_s=None,
    flops_per_call=None,
    flops_source=None,
    impl="vae-jax",
    temp_bytes=None,
    params=None,
    note="",
    command=None,
) -> dict:
    gflop_per_s = flops_per_call / t.median_s / 1e9 if flops_per_call else None
    ceiling = settings.ceiling_flop_per_s
    return {
        "benchmark": benchmark,
        "model": model,
        "impl": impl,
        "dtype": settings.compute_dtype if impl == "vae-jax" else "float32",
        "batch_size": batch_size,
        "images_per_call": images_per_call,
        "seconds_per_call": t.median_s,
        "p25_s": t.p25_s,
        "p75_s": t.p75_s,
        "repeats": t.repeats,
        "images_per_s": images_per_call / t.median_s,
        "compile_s": compile_s,
        "flops_per_call": flops_per_call,
        "flops_source": flops_source,
        "gflop_per_s": gflop_per_s,
        "ceiling_gflop_per_s": ceiling / 1e9 if ceiling else None,
        "fraction_of_ceiling": gflop_per_s * 1e9 / ceiling if (gflop_per_s and ceiling) else None,
        "host_peak_rss_mb": timing.host_peak_rss_mb(),
        "device_memory": timing.device_memory(),
        "xla_temp_bytes": temp_bytes,
        "params": params or {},
        "note": note,
        "command": command or _command(benchmark, model, batch_size, settings.seconds),
    }


def skip_row(benchmark: str, model: str, reason: str, **params) -> dict:
    return {"benchmark": benchmark, "model": model, "skipped": reason, "params": params}


def _check_memory(settings, compiled, what):
    if compiled.temp_bytes is not None and compiled.temp_bytes > settings.memory_limit_bytes:
        raise Skip(
            f"{what} needs {compiled.temp_bytes / 2**30:.1f} GiB of XLA scratch memory "
            f"(> limit {settings.memory_limit_bytes / 2**30:.1f} GiB)"
        )


def _device_put(tree):
    return jax.device_put(tree)


def _model_inputs(config, model, batch_size, seed=0):
    """uint8 images and what the likelihood reads (binarized / dequantized / 8-bit)."""
    images = synthetic_images(batch_size, model.data_shape, seed)
    x = prepare(images, config.likelihood_input, jax.random.key(seed + 1))
    return images, _device_put(x)


def _family(config):
    return config.model


def _mlp_sizes(config, model):
    if config.model != "mlp" or len(config.hidden) != 1:
        return None
    return math.prod(model.data_shape), config.hidden[0], config.latent_dim


# ---- per-function timings -------------------------------------------------------------------


def _time_jitted(
    settings,
    benchmark,
    name,
    fn,
    args,
    *,
    batch_size,
    images_per_call,
    params=None,
    analytic_flops=None,
    note="",
    command=None,
):
    compiled = timing.compile_ahead(jax.jit(fn), *args)
    _check_memory(settings, compiled, f"{benchmark} at batch {batch_size}")
    t = timing.time_calls(
        lambda: compiled.call(*args), seconds=settings.seconds, min_repeats=settings.min_repeats
    )
    params = dict(params or {})
    if analytic_flops:
        params["analytic_flops_per_call"] = analytic_flops
        params["xla_over_analytic"] = compiled.flops / analytic_flops if compiled.flops else None
    return make_row(
        settings,
        benchmark,
        name,
        batch_size=batch_size,
        images_per_call=images_per_call,
        t=t,
        compile_s=compiled.compile_s,
        flops_per_call=compiled.flops,
        flops_source="xla (compiled)",
        temp_bytes=compiled.temp_bytes,
        params=params,
        note=note,
        command=command,
    )


def _function_setup(settings, name):
    """``(config, model, batch, params, x)`` for timing one core function at the model's batch."""
    config, model = build(name, compute_dtype=settings.compute_dtype)
    batch = settings.batch_size or config.batch_size
    params = _device_put(model.init(jax.random.key(0)))
    _, x = _model_inputs(config, model, batch)
    return config, model, batch, params, x


def bench_encode(settings, name):
    _, model, batch, params, x = _function_setup(settings, name)
    fn = partial(objectives.encode, model)
    return [_time_jitted(settings, "encode", name, fn, (params, x), batch_size=batch, images_per_call=batch)]


def bench_decode(settings, name):
    _, model, batch, params, _ = _function_setup(settings, name)
    leaves, structure = jax.tree_util.tree_flatten(model.latent_template)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    z = jax.tree_util.tree_unflatten(
        structure, [jax.random.normal(k, (batch, *t.shape)) for k, t in zip(keys, leaves)]
    )
    fn = partial(objectives.decode, model)
    note = "images decoded from every latent group"
    return [
        _time_jitted(
            settings, "decode", name, fn, (params, z), batch_size=batch, images_per_call=batch, note=note
        )
    ]


def bench_elbo(settings, name):
    config, model, batch, params, x = _function_setup(settings, name)
    sizes = _mlp_sizes(config, model)
    analytic = flops_lib.mlp_forward_flops(batch, *sizes) if sizes else None
    fn = partial(objectives.elbo, model)
    args = (params, x, jax.random.key(3))
    return [
        _time_jitted(
            settings, "elbo", name, fn, args, batch_size=batch, images_per_call=batch, analytic_flops=analytic
        )
    ]


def bench_iwae(settings, name):
    config, model = build(name, compute_dtype=settings.compute_dtype)
    params = _device_put(model.init(jax.random.key(0)))
    rows = []
    ks = (1, 50, 5000) if (config.model == "mlp" or not settings.quick) else (1, 50)
    for k in [settings.k] if settings.k else ks:
        want = settings.batch_size or config.batch_size
        batch = max(1, min(want, SAMPLES_AT_ONCE[_family(config)] // k))
        _, x = _model_inputs(config, model, batch)
        note = "" if batch == want else f"batch cut from {want}: iwae_bound holds all B*k samples at once"
        fn = partial(objectives.iwae_bound, model, k=k)
        try:
            row = _time_jitted(
                settings,
                "iwae_bound",
                name,
                fn,
                (params, x, jax.random.key(4)),
                batch_size=batch,
                images_per_call=batch,
                params={"k": k},
                note=note,
                command=_command("iwae_bound", name, batch, settings.seconds, f"--k {k}"),
            )
            row["samples_per_s"] = row["images_per_s"] * k
        except Skip as reason:
            row = skip_row("iwae_bound", name, str(reason), k=k, batch_size=batch)
        rows.append(row)
    return rows


# ---- the train step -------------------------------------------------------------------------


def train_step_flops(model, config, train_steps, state, batches):
    """XLA's FLOPs for one step: the HLO cost analysis of a one-step dispatch of the same jitted
    function, lowered but not compiled. (XLA counts a loop body once whatever its trip count,
    so the compiled many-step program undercounts when the steps run in a ``lax.scan``.)"""
    return timing.xla_flops_lowered(train_steps.lower(state, batches[:1]))


def time_train_steps(
    settings,
    name,
    config,
    model,
    *,
    batch_size,
    benchmark="train_step",
    params=None,
    shardings=None,
    seconds=None,
    note="",
):
    """The library's ``make_train_steps`` at the model's config: ``steps_per_dispatch`` steps a
    call, the state donated and threaded from call to call, the batches already on device."""
    steps = config.steps_per_dispatch
    state = configured.init_state(model, config)
    batches = synthetic_images(steps * batch_size, model.data_shape).reshape(
        steps, batch_size, *model.data_shape
    )
    if shardings is not None:
        state = jax.device_put(state, shardings[0])
        batches = jax.device_put(batches, shardings[1])
    else:
        batches = _device_put(batches)
    train_steps = configured.train_steps_of(model, config)
    per_step = train_step_flops(model, config, train_steps, state, batches)
    compiled = timing.compile_ahead(train_steps, state, batches)
    _check_memory(settings, compiled, f"train step at batch {batch_size}")
    holder = {"state": state}

    def call():
        holder["state"], metrics = compiled.call(holder["state"], batches)
        return holder["state"], metrics

    t = timing.time_calls(call, seconds=seconds or settings.seconds, min_repeats=settings.min_repeats)
    params = dict(
        params or {},
        steps_per_dispatch=steps,
        optimizer="adamw+clip (config)",
        learning_rate=config.learning_rate,
    )
    sizes = _mlp_sizes(config, model)
    if sizes:
        exact = flops_lib.mlp_train_step_flops(batch_size, *sizes) * steps
        params["analytic_flops_per_call"] = exact
        params["analytic_flops_per_call_3x_convention"] = (
            flops_lib.mlp_train_step_flops_3x(batch_size, *sizes) * steps
        )
        params["analytic_gflop_per_s"] = exact / t.median_s / 1e9
        if settings.ceiling_flop_per_s:
            params["analytic_fraction_of_ceiling"] = exact / t.median_s / settings.ceiling_flop_per_s
        params["xla_over_analytic"] = per_step * steps / exact if per_step else None
    params["xla_flops_compiled_program"] = compiled.flops
    return make_row(
        settings,
        benchmark,
        name,
        batch_size=batch_size,
        images_per_call=steps * batch_size,
        t=t,
        compile_s=compiled.compile_s,
        flops_per_call=per_step * steps if per_step else None,
        flops_source="xla (lowered one-step program) x steps",
        temp_bytes=compiled.temp_bytes,
        params=params,
        note=note,
    )


def bench_train_step(settings, name):
    config, model = build(name, compute_dtype=settings.compute_dtype)
    batch = settings.batch_size or config.batch_size
    if batch != config.batch_size:
        config, model = build(name, batch_size=batch, compute_dtype=settings.compute_dtype)
    return [time_train_steps(settings, name, config, model, batch_size=batch)]


# ---- importance-sampled log-likelihood ------------------------------------------------------


def log_likelihood_fn(model, config, k, chunk_size):
    """What ``dataset_evaluation.evaluate_log_likelihood`` jits per batch: prepare the uint8 batch, then the
    library's chunked estimator."""
    kwargs = {} if chunk_size is None else {"chunk_size": chunk_size}

    def batch_log_likelihood(params, batch, key):
        data_key, sample_key = jax.random.split(key)
        x = prepare(batch, config.likelihood_input, data_key)
        return evaluation.log_likelihood(model, params, x, sample_key, k=k, **kwargs)

    return batch_log_likelihood


def _ll_images_for(settings, name, config):
    if name == "mlp-784-400-20":
        return settings.ll_images
    if settings.quick:
        return 16 if config.model == "mlp" else 2
    return {"mlp": 400, "conv": 2, "hvae": 2}[config.model]


def time_log_likelihood(
    settings, name, *, images_count=None, batch_size=None, chunk_size=None, k=None, benchmark="log_likelihood"
):
    config, model = build(name, compute_dtype=settings.compute_dtype)
    k = k or (settings.ll_k if (config.model == "mlp" or not settings.quick) else 100)
    count = images_count or _ll_images_for(settings, name, config)
    batch = min(batch_size or (settings.ll_batch_size if config.model == "mlp" else 2), count)
    count -= count % batch
    images, source = test_images(count, model.data_shape)
    params = _device_put(model.init(jax.random.key(0)))
    chunk, num_chunks = evaluation.chunking(model, params, k, chunk_size or settings.ll_chunk_size)
    fn = log_likelihood_fn(model, config, k, chunk)
    jitted = jax.jit(fn)
    first = _device_put(images[:batch])
    compiled = timing.compile_ahead(jitted, params, first, jax.random.key(0))
    _check_memory(settings, compiled, f"log_likelihood at batch {batch}, chunk {chunk}")
    # One chunk of one group of images has no loop, so XLA's count of it is exact; times the
    # groups, chunks and batches run.
    groups = -(-batch // max(1, batching.samples_per_chunk(model, params) // chunk))
    group = -(-batch // groups)
    one_chunk = jax.jit(log_likelihood_fn(model, config, chunk, chunk)).lower(
        params, first[:group], jax.random.key(0)
    )
    chunk_flops = timing.xla_flops_lowered(one_chunk)
    if chunk_flops:
        chunk_flops *= groups
    batches = [_device_put(images[i : i + batch]) for i in range(0, count, batch)]
    keys = [jax.random.fold_in(jax.random.key(7), i) for i in range(len(batches))]
    # No warm-up call: each batch is a long call of an ahead-of-time compiled program.
    per_batch = []
    began = time.perf_counter()
    for b, key in zip(batches, keys):
        tick = time.perf_counter()
        timing.block(compiled.call(params, b, key))
        per_batch.append(time.perf_counter() - tick)
        if settings.ll_budget_s and time.perf_counter() - began > settings.ll_budget_s:
            break  # out of time: report the images done and project the rest
    wanted = count
    count = len(per_batch) * batch
    batches = batches[: len(per_batch)]
    total = float(np.sum(per_batch))
    p25, p75 = np.percentile(per_batch, [25, 75]) * len(per_batch)
    t = timing.Timing(total, float(p25), float(p75), len(per_batch))
    flops_total = chunk_flops * num_chunks * len(batches) if chunk_flops else None
    p = {
        "k": k,
        "chunk_size": chunk,
        "images": count,
        "data": source,
        "eval_batch_size": batch,
        "seconds_per_batch_median": float(np.median(per_batch)),
    }
    sizes = _mlp_sizes(config, model)
    if sizes:
        floor = flops_lib.mlp_log_likelihood_floor_flops(count, k, *sizes)
        p["analytic_floor_flops"] = floor
        p["analytic_flops_as_run"] = flops_lib.mlp_log_likelihood_flops(count, k, chunk, *sizes)
        if settings.ceiling_flop_per_s:
            floor_s = floor / settings.ceiling_flop_per_s
            p["floor_seconds_at_ceiling"] = floor_s
            p["times_floor"] = total / floor_s
    if count < 10_000:
        p["projected_seconds_for_10000_images"] = total / count * 10_000
    note = f"one pass over {count} images ({len(batches)} batches); seconds_per_call is the whole pass"
    if count < wanted:
        note += f"; stopped at the {settings.ll_budget_s:g} s budget, {wanted} images were asked for"
    return make_row(
        settings,
        benchmark,
        name,
        batch_size=batch,
        images_per_call=count,
        t=t,
        compile_s=compiled.compile_s,
        flops_per_call=flops_total,
        flops_source="xla (one-chunk program) x chunks x batches",
        temp_bytes=compiled.temp_bytes,
        params=p,
        note=note,
        command=_command(benchmark, name, batch, None, f"--ll-images {count}"),
    )


def bench_log_likelihood(settings, name):
    return [time_log_likelihood(settings, name, batch_size=settings.batch_size)]


def bench_log_likelihood_chunks(settings, name):
    """Chunk size and evaluation batch of ``log_likelihood`` (k = 5000) on a few images: the
    working set is batch x chunk x D floats, which decides whether it lives in cache."""
    config, _model = build(name, compute_dtype=settings.compute_dtype)
    if config.model != "mlp":
        raise Skip("chunk sweep is for the MLP models")
    # (images per call, chunk; None: the library's default): the library groups a call's images so a chunk holds about
    # evaluation.samples_per_chunk samples; these rows show what batch and chunk then cost.
    grid = (
        [(10, None), (10, 500)]
        if settings.quick
        else [
            (256, None),
            (8, None),
            (256, 256),
            (100, 500),
            (16, 500),
            (8, 500),
            (4, 500),
            (16, 64),
            (64, 16),
        ]
    )
    images = 20 if settings.quick else 40
    rows = []
    for batch, chunk in grid:
        count = max(images, batch)
        row = time_log_likelihood(
            settings,
            name,
            images_count=count,
            batch_size=batch,
            chunk_size=chunk,
            benchmark="log_likelihood_chunks",
        )
        row["command"] = _command("log_likelihood_chunks", name)
        rows.append(row)
    return rows


# ---- scaling curves -------------------------------------------------------------------------


def _scaling_point(settings, name, benchmark, axis, value, *, batch, seconds, **overrides):
    """One point of a scaling curve: the train step of ``name`` built with ``overrides``."""
    config, model = build(name, batch_size=batch, compute_dtype=settings.compute_dtype, **overrides)
    params = {"axis": axis, "value": value}
    return time_train_steps(
        settings, name, config, model, batch_size=batch, benchmark=benchmark, params=params, seconds=seconds
    )


def bench_scaling_batch(settings, name):
    """Train-step throughput against batch size (the MLP 784-400-20 at its config)."""
    if settings.batch_size:
        sizes = [settings.batch_size]
    else:
        sizes = (1, 16, 128) if settings.quick else (1, 16, 64, 256, 1024, 4096)
    seconds = min(settings.seconds, 0.5)
    return [
        _scaling_point(settings, name, "scaling_batch", "batch_size", batch, batch=batch, seconds=seconds)
        for batch in sizes
    ]


def bench_scaling_latent(settings, name):
    config, _ = build(name, compute_dtype=settings.compute_dtype)
    if config.model != "mlp":
        raise Skip("latent scaling is run on the MLP")
    latents = (2, 20) if settings.quick else (2, 20, 64, 256)
    batch, seconds = settings.batch_size or config.batch_size, min(settings.seconds, 1.0)
    return [
        _scaling_point(
            settings,
            name,
            "scaling_latent",
            "latent_dim",
            latent,
            batch=batch,
            seconds=seconds,
            latent_dim=latent,
        )
        for latent in latents
    ]


IMAGE_SIZE_MODELS = {
    # 1-channel Bernoulli models at 28, 32 and 64 pixels a side.
    "mlp": ("mlp-784-400-20", {}),
    "conv": ("conv", dict(likelihood="bernoulli", widths=(32, 64), latent_channels=4, blocks_per_stage=1)),
}


def bench_scaling_image(settings, name):
    """Train-step throughput against image size: the MLP (784-400-20 widened to D inputs) and a
    small Bernoulli conv VAE (the fashion-mnist-conv preset), 1 channel, 28 / 32 / 64 a side."""
    rows = []
    sizes = (28, 32) if settings.quick else (28, 32, 64)
    for family, (model_name, overrides) in IMAGE_SIZE_MODELS.items():
        if settings.quick and family != "mlp":
            continue
        batch = settings.batch_size or (128 if family == "mlp" else 16)
        for size in sizes:
            config, model = build(model_name, data_shape=(size, size, 1), batch_size=batch, compute_dtype=settings.compute_dtype, **overrides)
            label = model_name if family == "mlp" else "conv-bernoulli-32-64"
            row = time_train_steps(
                settings,
                label,
                config,
                model,
                batch_size=batch,
                benchmark="scaling_image",
                params={"axis": "image_size", "value": size, "family": family},
                seconds=min(settings.seconds, 1.0),
            )
            rows.append(row)
    return rows


def bench_scaling_devices(settings, name):
    """Data-parallel train step over 1, 2, 4, ... of the available devices (weak scaling: the
    batch per device is fixed, the state replicated, the batch split with a NamedSharding)."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.devices()
    config, _ = build(name, compute_dtype=settings.compute_dtype)
    per_device = settings.batch_size or config.batch_size
    counts = sorted({2**i for i in range(int(math.log2(len(devices))) + 1)} | {len(devices)})
    rows = []
    for n in counts:
        mesh = Mesh(np.array(devices[:n]), ("data",))
        config, model = build(name, batch_size=per_device * n)
        shardings = (NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec(None, "data")))
        rows.append(
            time_train_steps(
                settings,
                name,
                config,
                model,
                batch_size=per_device * n,
                benchmark="scaling_devices",
                shardings=shardings,
                params={"axis": "devices", "value": n, "per_device_batch": per_device},
                seconds=min(settings.seconds, 1.0),
                note=f"{len(devices)} device(s) available",
            )
        )
    return rows


# ---- peers ----------------------------------------------------------------------------------


def bench_peers(settings, name):
    """vae-jax's train step against a plain Flax step and PyTorch, same architecture, batch 128,
    Adam 1e-3, dynamically binarized uint8 data; interleaved A, B, C, A, B, C, ..."""
    from benchmarks import peers_flax

    config, model = build(name, compute_dtype=settings.compute_dtype)
    if config.model != "mlp":
        raise Skip("peers are the MLP VAE")
    batch = settings.batch_size or 128
    config, model = build(name, batch_size=batch, compute_dtype=settings.compute_dtype)
    steps = config.steps_per_dispatch
    hidden = config.hidden[0]
    data = synthetic_images(steps * batch, model.data_shape).reshape(steps, batch, -1)

    state = configured.init_state(model, dataclasses.replace(config, seed=0))
    batches = _device_put(data.reshape(steps, batch, *model.data_shape))
    train_steps = configured.train_steps_of(model, config)
    compiled = timing.compile_ahead(train_steps, state, batches)
    holder = {"state": state}

    def vae_jax_call():
        holder["state"], _metrics = compiled.call(holder["state"], batches)
        return holder["state"]

    calls = {"vae-jax": vae_jax_call}
    tick = time.perf_counter()
    flax_run = peers_flax.make_loop(hidden, data)
    timing.block(flax_run())
    compile_s = {"vae-jax": compiled.compile_s, "flax": time.perf_counter() - tick}
    calls["flax"] = flax_run
    versions = {}
    skipped = []
    try:
        from benchmarks import peers_torch
    except ImportError as error:
        skipped.append(
            skip_row(
                "peers", name, f"torch not installed ({error}); pip install 'vae-jax[bench]'", impl="torch"
            )
        )
    else:
        versions["torch"] = peers_torch.setup_threads()
        torch_step = peers_torch.make_train_step(hidden, data)

        def torch_call():
            for _ in range(steps):
                loss = torch_step()
            return jnp.float32(float(loss))

        calls["torch"] = torch_call
        compile_s["torch"] = 0.0
        if settings.torch_one_thread_row:
            # On a shared machine, torch at every core's thread count suffers most from the
            # other jobs (OpenMP workers wait on each other); one thread shows what it does alone.
            one = peers_torch.make_train_step(hidden, data)

            def torch_one_thread_call():
                threads = peers_torch.torch.get_num_threads()
                peers_torch.torch.set_num_threads(1)
                for _ in range(steps):
                    loss = one()
                peers_torch.torch.set_num_threads(threads)
                return jnp.float32(float(loss))

            calls["torch-1thread"] = torch_one_thread_call
            compile_s["torch-1thread"] = 0.0
    times = timing.time_interleaved(calls, seconds=settings.seconds * len(calls), rounds=5)
    reference = times["vae-jax"].median_s
    rows = []
    sizes = _mlp_sizes(config, model)
    analytic = flops_lib.mlp_train_step_flops(batch, *sizes) * steps
    for impl, t in times.items():
        p = {
            "steps_per_call": steps,
            "hidden": hidden,
            "optimizer": "Adam 1e-3"
            if impl != "vae-jax"
            else "library config: AdamW(wd=0) 1e-3 peak, warm-up, clip, EMA, non-finite guard",
            "vae_jax_speedup_over_this": t.median_s / reference,
            "ratio_to_vae_jax": reference / t.median_s,
        }
        if impl == "torch":
            p["torch_threads"] = versions.get("torch")
        if impl == "torch-1thread":
            p["torch_threads"] = 1
        rows.append(
            make_row(
                settings,
                "peers",
                name,
                impl=impl,
                batch_size=batch,
                images_per_call=steps * batch,
                t=t,
                compile_s=compile_s.get(impl),
                flops_per_call=analytic,
                flops_source="analytic matmul FLOPs (same for all three)",
                params=p,
                note="interleaved rounds",
                command=_command("peers", name, batch, settings.seconds),
            )
        )
    return rows + skipped


# ---- the registry ---------------------------------------------------------------------------

ALL_MODELS = tuple(MODELS)
BENCHMARKS = {
    # name: (function, models it runs on by default)
    "encode": (bench_encode, ALL_MODELS),
    "decode": (bench_decode, ALL_MODELS),
    "elbo": (bench_elbo, ALL_MODELS),
    "iwae_bound": (bench_iwae, ALL_MODELS),
    "train_step": (bench_train_step, ALL_MODELS),
    "log_likelihood": (bench_log_likelihood, ALL_MODELS),
    "log_likelihood_chunks": (bench_log_likelihood_chunks, ("mlp-784-400-20",)),
    "scaling_batch": (bench_scaling_batch, ("mlp-784-400-20",)),
    "scaling_latent": (bench_scaling_latent, ("mlp-784-400-20",)),
    "scaling_image": (bench_scaling_image, ("mlp-784-400-20",)),
    "scaling_devices": (bench_scaling_devices, ("mlp-784-400-20",)),
    "peers": (bench_peers, ("mlp-784-400-20", "mlp-784-500-20")),
}
