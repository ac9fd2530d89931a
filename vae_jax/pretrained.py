"""The models that ship inside the package: export a finished run as one, list them, load one back.

``export(RUN_DIR, NAME)`` writes the run's EMA parameters, configuration and provenance to
``vae_jax/pretrained/NAME/`` (the folder's four files are described in ``vae_jax.trained``, which
reads them back and checks them); ``load(NAME)`` is ``vae_jax.trained.load("pretrained:NAME")``.
``python -m vae_jax.pretrained export RUN_DIR [--name photos]`` is the project's own way to ship a
run (its training command is recorded in ``provenance.json`` and the README).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import flax.serialization
import jax
import numpy as np

from vae_jax import config as config_lib
from vae_jax import trained

DEFAULT = trained.DEFAULT_SHIPPED
DIRECTORY = trained.SHIPPED_DIRECTORY


def available() -> list[str]:
    """Names of the shipped models."""
    return trained.available()


def load(name: str = DEFAULT, directory: Path | None = None) -> trained.TrainedModel:
    """The shipped model ``name`` (or the one exported to ``directory``): ``.model``, ``.params``,
    ``.config``, ``.provenance``; a missing or altered file raises ``trained.LoadError``."""
    return trained.load_shipped(name, directory)


def export(run_dir, name: str = DEFAULT, *, command: str = "", commit: str = "", measured: dict | None = None,
           directory: Path | None = None, dtype: str = "float32") -> Path:  # fmt: skip
    """Write a run's EMA parameters (as ``dtype``: float32 or float16), config and provenance as
    shipped model ``name``; returns the folder."""
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype: expected float32 or float16, got {dtype!r}")
    run = trained.load_run(run_dir)
    folder = Path(directory) if directory is not None else DIRECTORY / name
    folder.mkdir(parents=True, exist_ok=True)
    params = jax.tree_util.tree_map(lambda a: np.asarray(a, dtype), run.params)
    params_path = folder / "params.msgpack"
    params_path.write_bytes(flax.serialization.to_bytes(params))
    (folder / "config.json").write_text(config_lib.to_json(run.config) + "\n")
    (folder / "data_shape.json").write_bytes((Path(run_dir) / "data_shape.json").read_bytes())
    provenance = {
        "command": command,
        "commit": commit,
        "step": run.step,
        "params_sha256": trained.file_sha256(params_path),
        "stored_dtype": dtype,
        "parameters": int(sum(np.size(a) for a in jax.tree_util.tree_leaves(params))),
        "measured": measured or {},
    }
    (folder / "provenance.json").write_text(json.dumps(provenance, indent=1) + "\n")
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vae_jax.pretrained", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    out = sub.add_parser("export", help="ship a finished run's EMA parameters")
    out.add_argument("run_dir")
    out.add_argument("--name", default=DEFAULT)
    out.add_argument("--command", default="", help="the command that trained the run (recorded)")
    out.add_argument("--commit", default="", help="the commit it was trained at (recorded)")
    out.add_argument("--measured", default="{}", help="a JSON object of what it measured (recorded)")
    out.add_argument("--dtype", default="float32", choices=("float32", "float16"), help="how the params are stored")
    sub.add_parser("list", help="the shipped models")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in available():
            print(name, json.dumps(load(name).provenance))
        return 0
    folder = export(args.run_dir, args.name, command=args.command, commit=args.commit,
                    measured=json.loads(args.measured), dtype=args.dtype)  # fmt: skip
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
