"""A trained model loaded back, from a run directory or from the models shipped inside the package.

``load(spec)`` is the one way in. ``spec`` is a run directory (made by ``runs.train``: its latest
intact checkpoint, the EMA parameters evaluated and used by the apps) or ``pretrained:NAME`` (the
model shipped in ``vae_jax/pretrained/NAME/``, written by ``vae_jax.pretrained.export``); no spec
is the default shipped model. Either kind comes back as one record, ``TrainedModel``.

A shipped folder holds four files:

- ``config.json`` and ``data_shape.json``: the run's, as a run directory holds them;
- ``params.msgpack``: the run's EMA parameters, serialized by ``flax.serialization`` (parameters
  only, no optimizer state; stored in float16 if exported so, to halve the size: they are loaded
  back as float32, and what ``provenance.json`` records was measured with those rounded values);
- ``provenance.json``: the command, commit and step that made it, its SHA-256, and what it measured.

A missing, truncated or altered file fails with an error naming the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import flax.serialization
import jax
import numpy as np

from vae_jax import config as config_lib

PRETRAINED_PREFIX = "pretrained:"
SHIPPED_DIRECTORY = Path(__file__).parent / "pretrained"
DEFAULT_SHIPPED = "photos"


class LoadError(ValueError):
    """A spec that names no trained model, or files that do not hold the model they describe."""


@dataclasses.dataclass(frozen=True, eq=False)  # params are arrays: one record equals itself only
class TrainedModel:
    """A trained model and where it came from.

    ``params`` are the parameters to use: a run's EMA parameters, a shipped model's parameters.
    ``source_kind`` is ``"run"`` (``directory`` is the run directory, ``state`` its full training
    state at ``step``) or ``"pretrained"`` (``directory`` is the shipped folder inside the package,
    ``provenance`` what made it; no training state ships). ``step``: the training step the
    parameters are from (None for a shipped model whose provenance does not record it)."""

    name: str
    config: config_lib.Config
    model: object
    params: object
    source_kind: str
    directory: Path
    step: int | None
    provenance: dict = dataclasses.field(default_factory=dict)
    state: object = None


def load(spec: str | None = None) -> TrainedModel:
    """The trained model ``spec`` names: a run directory, or ``pretrained:NAME``; None: the default shipped model."""
    if spec is None:
        return load_shipped(DEFAULT_SHIPPED)
    spec = str(spec)
    if spec.startswith(PRETRAINED_PREFIX):
        return load_shipped(spec.removeprefix(PRETRAINED_PREFIX))
    if not Path(spec).is_dir():
        raise LoadError(f"{spec} is not a run directory (no such directory: train that run first), nor pretrained:NAME")
    return load_run(spec)


def load_run(run_dir, step: int | None = None) -> TrainedModel:
    """Rebuild a run's model and restore its checkpoint (the latest intact one, or ``step``'s)."""
    # Orbax and optax are imported here, when a run is loaded: ``import vae_jax`` stays quick.
    from vae_jax import checkpoints, configured

    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise LoadError(f"{run_dir} is not a run directory: {config_path} is missing")
    config = config_lib.from_json_file(config_path)
    shape_path = run_dir / "data_shape.json"
    if not shape_path.is_file():
        raise LoadError(f"{run_dir} has no data_shape.json: the run never started training")
    model = config_lib.build_model(config, tuple(json.loads(shape_path.read_text())))
    template = configured.init_state(model, config)
    state = checkpoints.restore(checkpoints.manager(run_dir), template, step)
    return TrainedModel(
        name=run_dir.name, config=config, model=model, params=state.ema_params, source_kind="run",
        directory=run_dir, step=int(state.step), state=state,
    )  # fmt: skip


def available() -> list[str]:
    """Names of the shipped models."""
    if not SHIPPED_DIRECTORY.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIRECTORY.iterdir() if (p / "params.msgpack").is_file())


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_shipped(name: str = DEFAULT_SHIPPED, directory: Path | None = None) -> TrainedModel:
    """The shipped model ``name`` (or the one exported to ``directory``), its files checked first."""
    folder = Path(directory) if directory is not None else SHIPPED_DIRECTORY / name
    if not folder.is_dir():
        raise LoadError(f"no shipped model {name!r} (looked in {folder}); shipped: {available() or 'none'}")
    paths = {part: folder / f"{part}.json" for part in ("config", "data_shape", "provenance")}
    paths["params"] = folder / "params.msgpack"
    for path in paths.values():
        if not path.is_file():
            raise LoadError(f"shipped model {name!r}: {path} is missing")
    provenance = json.loads(paths["provenance"].read_text())
    if file_sha256(paths["params"]) != provenance.get("params_sha256"):
        raise LoadError(
            f"shipped model {name!r}: {paths['params']} does not match the SHA-256 in {paths['provenance']} "
            f"(truncated or altered); reinstall the package"
        )
    config = config_lib.from_json_file(paths["config"])
    model = config_lib.build_model(config, tuple(json.loads(paths["data_shape"].read_text())))
    template = jax.eval_shape(lambda: model.init(jax.random.key(0)))
    params = flax.serialization.from_bytes(template, paths["params"].read_bytes())
    params = jax.tree_util.tree_map(lambda a, t: np.asarray(a, t.dtype), params, template)
    return TrainedModel(
        name=name, config=config, model=model, params=params, source_kind="pretrained", directory=folder,
        step=provenance.get("step"), provenance=provenance,
    )  # fmt: skip
