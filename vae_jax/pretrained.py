"""The model that ships inside the package: a trained photos model the apps use when no run is given.

``vae_jax/pretrained/NAME/`` holds four files:

- ``config.json`` and ``data_shape.json``: the run's, as a run directory holds them;
- ``params.msgpack``: the run's EMA parameters, serialized by ``flax.serialization`` (parameters
  only, no optimizer state; stored in float16 if exported so, to halve the size: they are loaded
  back as float32, and what ``provenance.json`` records was measured with those rounded values);
- ``provenance.json``: the command, commit and step that made it, its SHA-256, and what it measured.

``load("photos")`` rebuilds ``(config, model, params)``; a missing, truncated or altered file fails
with an error naming the file. ``python -m vae_jax.pretrained export RUN_DIR [--name photos]``
writes the three files from a finished run (the project's own training command, recorded in
``provenance.json`` and the README).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import flax.serialization
import jax
import numpy as np

from vae_jax import config as config_lib

DEFAULT = "photos"
DIRECTORY = Path(__file__).parent / "pretrained"


class PretrainedError(ValueError):
    """A shipped model that is missing or whose files do not match what was shipped."""


@dataclasses.dataclass(frozen=True)
class Pretrained:
    name: str
    config: config_lib.Config
    model: object
    params: object
    provenance: dict

    @property
    def directory(self) -> Path:
        return DIRECTORY / self.name


def available() -> list[str]:
    """Names of the shipped models."""
    if not DIRECTORY.is_dir():
        return []
    return sorted(p.name for p in DIRECTORY.iterdir() if (p / "params.msgpack").is_file())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(name: str = DEFAULT, directory: Path | None = None) -> Pretrained:
    """The shipped model ``name`` (or the one exported to ``directory``): its config, model and params."""
    folder = Path(directory) if directory is not None else DIRECTORY / name
    if not folder.is_dir():
        raise PretrainedError(f"no shipped model {name!r} (looked in {folder}); shipped: {available() or 'none'}")
    paths = {part: folder / f"{part}.json" for part in ("config", "data_shape", "provenance")}
    paths["params"] = folder / "params.msgpack"
    for path in paths.values():
        if not path.is_file():
            raise PretrainedError(f"shipped model {name!r}: {path} is missing")
    provenance = json.loads(paths["provenance"].read_text())
    if _sha256(paths["params"]) != provenance.get("params_sha256"):
        raise PretrainedError(
            f"shipped model {name!r}: {paths['params']} does not match the SHA-256 in {paths['provenance']} "
            f"(truncated or altered); reinstall the package"
        )
    config = config_lib.from_json_file(paths["config"])
    model = config_lib.build_model(config, tuple(json.loads(paths["data_shape"].read_text())))
    template = jax.eval_shape(lambda: model.init(jax.random.key(0)))
    params = flax.serialization.from_bytes(template, paths["params"].read_bytes())
    params = jax.tree_util.tree_map(lambda a, t: np.asarray(a, t.dtype), params, template)
    return Pretrained(name, config, model, params, provenance)


def export(run_dir, name: str = DEFAULT, *, command: str = "", commit: str = "", measured: dict | None = None,
           directory: Path | None = None, dtype: str = "float32") -> Path:  # fmt: skip
    """Write a run's EMA parameters (as ``dtype``: float32 or float16), config and provenance as
    shipped model ``name``; returns the folder."""
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype: expected float32 or float16, got {dtype!r}")
    from vae_jax import runs

    run = runs.load_run(run_dir)
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
        "step": int(run.state.step),
        "params_sha256": _sha256(params_path),
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
