"""Results as a Markdown table and a PNG of the scaling curves (matplotlib, Agg backend)."""

from __future__ import annotations

import json
from pathlib import Path


def _fmt(value, spec="{:.3g}"):
    if value is None:
        return ""
    if isinstance(value, float):
        return spec.format(value)
    return str(value)


def _detail(row):
    p = row.get("params", {})
    bits = []
    for key in ("k", "chunk_size", "images", "axis", "value", "steps_per_dispatch", "torch_threads"):
        if key in p and key != "axis":
            bits.append(f"{key}={p[key]}")
    if "ratio_to_vae_jax" in p and row.get("impl") != "vae-jax":
        bits.append(f"vae-jax is {p['vae_jax_speedup_over_this']:.2f}x")
    if "times_floor" in p:
        bits.append(f"{p['times_floor']:.2f}x FLOP floor")
    if "analytic_fraction_of_ceiling" in p:
        bits.append(f"analytic {100 * p['analytic_fraction_of_ceiling']:.0f}% of ceiling")
    if "projected_seconds_for_10000_images" in p:
        bits.append(f"10k images: ~{p['projected_seconds_for_10000_images']:.0f} s")
    return ", ".join(bits)


def markdown(results: dict) -> str:
    env = results["environment"]
    ceiling = results.get("ceilings", {})
    lines = [
        "# vae-jax benchmarks",
        "",
        (
            f"- backend **{env['backend']}** ({env['device_kind']}, {env['device_count']} device(s)), "
            f"{env['cpu_count']} CPUs ({env.get('cpu_model', '')}), jax {env['jax']} / jaxlib {env['jaxlib']}, "
            f"commit {env['git_commit']}, {env['time']}"
        ),
        (
            f"- load average before / after: {results.get('load_before')} / {results.get('load_after')}"
            f"{'' if results.get('quiet', True) else ' (**machine was busy: other jobs shared the cores**)'}"
        ),
    ]
    for name, c in ceiling.items():
        lines.append(
            f"- ceiling `{name}`: {c['n']}x{c['n']} {c['dtype']} matmul, {c['flop_per_s'] / 1e9:.1f} GFLOP/s"
            + (f" (end of run: {c['end_flop_per_s'] / 1e9:.1f})" if c.get("end_flop_per_s") else "")
        )
    lines += [
        (
            "- times: median of repeated calls after compile and warm-up, `block_until_ready` on every call; "
            "`p25-p75` is the spread; %ceil = achieved FLOP/s over the fp32 matmul ceiling above."
        ),
        "",
        (
            "| benchmark | model | impl | dtype | batch | images/s | ms/call (p25-p75) | compile s | GFLOP/s | %ceil "
            "| peak RSS MB | details |"
        ),
        "|---|---|---|---|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for row in results["rows"]:
        if "skipped" in row:
            lines.append(
                f"| {row['benchmark']} | {row['model']} | {row['params'].get('impl', 'vae-jax')} | | | | | | | | "
                f"| skipped: {row['skipped']} |"
            )
            continue
        frac = row.get("fraction_of_ceiling")
        lines.append(
            "| {b} | {m} | {i} | {dt} | {bs} | {ips} | {ms} ({lo}-{hi}) | {c} | {g} | {f} | {rss} | {d} |".format(
                b=row["benchmark"],
                m=row["model"],
                i=row["impl"],
                dt=row.get("dtype", "float32"),
                bs=row["batch_size"],
                ips=f"{row['images_per_s']:,.0f}"
                if row["images_per_s"] >= 10
                else f"{row['images_per_s']:.3g}",
                ms=_fmt(row["seconds_per_call"] * 1e3, "{:.4g}"),
                lo=_fmt(row["p25_s"] * 1e3, "{:.4g}"),
                hi=_fmt(row["p75_s"] * 1e3, "{:.4g}"),
                c=_fmt(row.get("compile_s"), "{:.2f}"),
                g=_fmt(row.get("gflop_per_s"), "{:.1f}"),
                f=f"{100 * frac:.0f}%" if frac else "",
                rss=_fmt(row.get("host_peak_rss_mb"), "{:.0f}"),
                d=_detail(row),
            )
        )
    return "\n".join(lines) + "\n"


SCALING = ("scaling_batch", "scaling_latent", "scaling_image", "scaling_devices")


def plot_scaling(results: dict, path: Path) -> bool:
    """Images/s and fraction of the matmul ceiling along each scaling axis; False if no rows."""
    rows = [r for r in results["rows"] if r.get("benchmark") in SCALING and "skipped" not in r]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(SCALING), figsize=(4.2 * len(SCALING), 7), squeeze=False)
    for col, bench in enumerate(SCALING):
        series = {}
        for r in rows:
            if r["benchmark"] != bench:
                continue
            series.setdefault(r["model"], []).append(
                (r["params"]["value"], r["images_per_s"], r.get("fraction_of_ceiling"))
            )
        top, bottom = axes[0][col], axes[1][col]
        for label, points in series.items():
            points.sort()
            xs = [p[0] for p in points]
            top.plot(xs, [p[1] for p in points], "o-", label=label)
            if any(p[2] for p in points):
                bottom.plot(xs, [100 * (p[2] or 0) for p in points], "o-", label=label)
        axis = bench.replace("scaling_", "")
        for ax in (top, bottom):
            ax.set_xlabel(axis)
            if axis in ("batch", "latent"):
                ax.set_xscale("log", base=2)
            ax.grid(True, alpha=0.3)
        top.set_yscale("log")
        top.set_title(f"train step vs {axis}")
        top.set_ylabel("images / s")
        bottom.set_ylabel("% of fp32 matmul ceiling")
        if series:
            top.legend(fontsize=7)
    env = results["environment"]
    fig.suptitle(
        f"vae-jax on {env['backend']} ({env['device_kind']}, {env['cpu_count']} CPUs), {env['git_commit']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(results: dict, out_dir: Path, stem: str = "results") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    paths[0].write_text(json.dumps(results, indent=2, default=str) + "\n")
    paths[1].write_text(markdown(results))
    png = out_dir / f"{stem}_scaling.png"
    if plot_scaling(results, png):
        paths.append(png)
    return paths
