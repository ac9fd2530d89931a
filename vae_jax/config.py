"""Run configuration: one frozen dataclass, named presets, ``key=value`` overrides, and the
model a configuration describes."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path

import jax.numpy as jnp

from vae_jax import architectures, likelihoods, priors


@dataclasses.dataclass(frozen=True)
class Config:
    # Data
    data: str = "photos"
    crop_size: int = 32
    scales: tuple[int, ...] = (1,)  # photos/folder: also train on copies downscaled by these factors
    zooms: tuple[int, ...] = ()  # photos/folder: and on copies enlarged by these (each scale equally often)
    permute_channels: bool = False  # photos/folder: each crop's colour channels in a random order
    max_saturation: float = 1.0  # photos/folder: colour gains drawn from [1/s, s], clipped (1: off)
    channels: int | None = None  # None: as the source gives them
    binarize: str = "dynamic"  # for a Bernoulli likelihood: "dynamic" or "static"
    data_dir: str | None = None
    manual_dir: str | None = None
    download: bool = False
    # Model
    model: str = "conv"  # "mlp" | "conv" | "hvae" | "stochastic_mlp" | "hyperprior" (lossy codec)
    likelihood: str = "dlm"  # a name in vae_jax.likelihoods.REGISTRY (coupled, local, local-cross: RGB; else dlm)
    mixture_components: int = 5
    obs_var: float | None = None  # Gaussian likelihood: None learns a per-pixel variance
    prior: str = "standard"  # "standard" | "mog" | "vamp"
    prior_components: int = 10
    hidden: tuple[int, ...] = (400,)
    latent_dim: int = 20
    activation: str | None = None  # None: the family's default (relu for MLPs, tanh for stochastic_mlp, silu for convolutions)
    widths: tuple[int, ...] = (32, 64, 128)
    blocks_per_stage: int = 1
    patch_size: int = 1  # conv/hvae: stage 0 works on p x p patches (space-to-depth) at H / p
    output_kernel: int = 3  # conv: the side of the decoder's last convolution (to the likelihood's parameters)
    latent_channels: int = 8
    groups_per_stage: tuple[int, ...] = (1, 1, 1)
    latent_sizes: tuple[int, ...] = (50,)  # stochastic_mlp: units per stochastic layer, z_1 first
    depth: int = 2  # stochastic_mlp: deterministic layers between stochastic ones (widths: their units)
    output_bias: str = "zero"  # "data_mean": p(x|z)'s logits at the training mean; "fit": at a least-squares fit
    init_from: str = ""  # a run directory or "pretrained:NAME": start from its parameters (output_bias unused)
    compute_dtype: str = "float32"  # "bfloat16" on accelerators
    # The lossy codec (model="hyperprior"): widths[0] transform channels, latent_channels latents
    rd_lambda: float = 0.0067  # the rate-distortion trade-off: bits/pixel + rd_lambda * MSE on 0..255
    mean_scale: bool = False  # Minnen et al.'s mean-scale hyperprior instead of the scale hyperprior
    # Optimisation
    batch_size: int = 32
    reshuffle: bool = True  # False: every epoch repeats the first epoch's order of batches
    steps: int = 1200
    objective: str = "elbo"  # "elbo" (averaged over k draws) | "iwae" (the k-sample bound L_k)
    # The ELBO's KL: "closed_form" where the model has it, or "sampled": log q(z|x) - log p(z) at the
    # drawn z, i.e. the ELBO estimated as the mean of log w (Burda et al.'s code trains its VAE so).
    kl_estimate: str = "closed_form"
    k: int = 1
    learning_rate: float = 2e-3
    lr_schedule: str = "cosine"  # "cosine" (warm-up, cosine decay) | "burda" (3^i epochs at 10^(-i/7))
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    warmup_steps: int = 100
    end_learning_rate_ratio: float = 0.05
    weight_decay: float = 0.0
    grad_clip: float = 200.0  # 0: off
    skip_grad_norm: float = 0.0  # 0: off; else skip updates whose gradient norm exceeds it
    skip_grad_norm_factor: float = 10.0  # 0: off; else skip norms above this multiple of their running mean
    kl_warmup_steps: int = 0
    free_bits: float = 0.0
    ema_decay: float = 0.999  # 0: off (evaluate the parameters themselves)
    steps_per_dispatch: int = 5
    seed: int = 0
    # Outputs
    log_every: int = 50
    eval_every: int = 400
    checkpoint_every: int = 400
    eval_batch_size: int = 256
    grid_size: int = 8

    @property
    def likelihood_input(self) -> str:
        """The ``vae_jax.images.prepare`` transform that turns 8-bit batches into what the
        likelihood reads: its ``input_kind``, continuous data dequantized, binary data binarized."""
        kind = build_likelihood(self).input_kind
        if kind == "binary":
            return f"{self.binarize}_binary"
        return "discrete" if kind == "discrete" else "dequantized"


FIELD_TYPES = typing.get_type_hints(Config)

FASHION_MNIST_IDX = "idx:/usr/share/datasets/fashion-mnist"
_BINARIZED_MLP = dict(
    model="mlp",
    likelihood="bernoulli",
    hidden=(400,),
    latent_dim=20,
    batch_size=128,
    steps=20000,
    learning_rate=1e-3,
    eval_every=2000,
    checkpoint_every=2000,
)

# Burda, Grosse & Salakhutdinov (2015), sec. 5: tanh MLPs, batch 20, Adam(0.9, 0.999, 1e-4),
# 3280 epochs in 8 stages (3^i epochs at 1e-3 * 10^(-i/7)), dynamically binarized MNIST, Glorot
# initialisation; the output bias starts at the logit of the training mean as in the paper's code
# (github.com/yburda/iwae). 3280 epochs of 60,000 images at batch 20 are 9,840,000 steps.
# Where the paper's code differs from its text or from this preset: it differentiates the sum over
# the batch, not the mean, so its eps = 1e-4 acts as 1e-4 / 20 = 5e-6 does here (Adam's update
# is invariant to the gradient's scale but for eps); its Adam runs with beta1 = 0.99 (its default;
# the text says 0.9), second moments starting at 1 and eps outside the bias correction; it visits the
# batches in a fixed order, trains on the first 59,600 images and rounds each stage's learning rate
# to two digits. This preset follows the text; `benchmarks.reproduce --set` trains a row with some
# of these as the code has them (adam_eps=5e-6, adam_b1=0.99, reshuffle=false).
_BURDA = dict(
    data="tfds:mnist",
    model="stochastic_mlp",
    likelihood="bernoulli",
    activation="tanh",
    depth=2,
    output_bias="data_mean",
    batch_size=20,
    steps=3280 * 60000 // 20,
    learning_rate=1e-3,
    lr_schedule="burda",
    adam_b1=0.9,
    adam_b2=0.999,
    adam_eps=1e-4,
    grad_clip=0.0,
    skip_grad_norm_factor=0.0,
    ema_decay=0.0,
    steps_per_dispatch=1000,
    log_every=30000,
    eval_every=300000,
    checkpoint_every=60000,
    eval_batch_size=1000,
)
BURDA_ONE_LAYER = dict(_BURDA, latent_sizes=(50,), widths=(200,))
BURDA_TWO_LAYERS = dict(_BURDA, latent_sizes=(100, 50), widths=(200, 100))

# Training data that covers what photographs look like at any size and colour (the natural-image
# issue, measured in the README's recipe table): the photos at half and full resolution and enlarged
# 2x and 4x (a high-resolution camera's smooth tiles), each scale equally often; colour channels in
# random orders (every hue); colour gains up to 2x, clipped (saturated, clipped colours).
NATURAL_PHOTOS = dict(scales=(1, 2), zooms=(2, 4), permute_channels=True, max_saturation=2.0)

# The hierarchical model for the embedded photographs: latent groups at 4x4, 8x8 and 16x16
# positions of 2x2 patches, the finest one a latent per 2x2 pixels (README, Results), with the
# main job's local likelihood and fitted start. Free bits (32 nats a group) keep the groups in
# use: with the local likelihood and no free bits every group's KL fell below 0.2 nats.
PHOTOS_HVAE = dict(
    NATURAL_PHOTOS,
    model="hvae",
    likelihood="local",
    output_bias="fit",
    free_bits=32.0,
    patch_size=2,
    widths=(64, 96, 128),
    groups_per_stage=(1, 2, 2),
    latent_channels=8,
    blocks_per_stage=1,
    batch_size=32,
    steps=6000,
    learning_rate=1e-3,
    kl_warmup_steps=500,
    eval_every=1000,
    checkpoint_every=1000,
)

# The lossy codec: Balle et al.'s scale hyperprior (N = 64 transform channels, M = 96 latents,
# narrower than the paper's 128 / 192 so that it trains on a 2-core CPU) on the embedded
# photographs with the lossless models' augmentations; Adam with the global gradient norm clipped
# at 1 (CompressAI's clip). Two stages: photos-rd-base trains the transforms on 64x64 crops (fast),
# then each quality fine-tunes it on 256x256 crops. The second stage is needed: a 64x64 crop has
# one hyper-latent, so the hyper-transforms only ever see image borders, and on whole photographs
# (hyper-latents in the interior) the base model's rate was 4x its rate on crops.
# rd_lambda per quality are CompressAI's bmshj2018-hyperprior values for its qualities 1-7
# (0.0018 ... 0.0932 on MSE of 0..255): on Kodak its qualities 1-6 span about 0.12 to 1.0 bits per
# pixel. q7 is there because these short CPU runs land below CompressAI's rates at every lambda.
PHOTOS_RATE_DISTORTION = dict(
    NATURAL_PHOTOS,
    model="hyperprior",
    widths=(64,),
    latent_channels=96,
    crop_size=64,
    batch_size=16,
    steps=2500,
    learning_rate=5e-4,
    grad_clip=1.0,
    eval_every=500,
    checkpoint_every=250,
    eval_batch_size=64,
)
RATE_DISTORTION_QUALITY = dict(
    PHOTOS_RATE_DISTORTION, init_from="runs/photos-rd-base", crop_size=256, batch_size=4, steps=400,
    learning_rate=2e-4, warmup_steps=20, eval_every=200, checkpoint_every=100, eval_batch_size=8, ema_decay=0.99,
)
RATE_DISTORTION_LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932)

PRESETS: dict[str, dict] = {
    # The main job: a convolutional VAE on the embedded photographs, sized to finish in about ten
    # minutes on a slow 2-core CPU (what each choice bought: docs/results/natural-images.md).
    # The cross-channel local likelihood (each pixel's mixture reads its causal neighbours and the
    # earlier channels' ones) starts at their least-squares predictor (output_bias="fit"); free
    # bits keep the latent in use beside it (without them the fitted start leaves z unused).
    # 2x2 patches keep every convolution off full resolution; the last layer is 1x1 because, with
    # 34 K numbers a pixel, a 3x3 one cost as much as the rest of the network; at a fixed time
    # budget batches of 16 and more steps beat batches of 32.
    "photos": dict(
        NATURAL_PHOTOS,
        likelihood="local-cross",
        output_bias="fit",
        free_bits=128.0,
        learning_rate=1e-3,
        patch_size=2,
        widths=(64, 128),
        output_kernel=1,
        batch_size=16,
        steps=1600,
        eval_every=800,
    ),
    "photos-hvae": PHOTOS_HVAE,
    # The shipped model: a finished photos-hvae run grown into the cross-channel likelihood
    # (vae_jax.warm_start) and trained on. From scratch with local-cross the groups went unused
    # (KL 14-20 nats an image on chelsea, which stayed at 3.45 bits/dim); grown, they stay in use
    # (KL 226) and chelsea goes 3.30 -> 2.97. 750 steps grown: 3.20, against 3.28 for the local
    # model trained on the same 750 steps; at lr 1e-3 the grown run diverged at step 680.
    "photos-hvae-cross": dict(
        PHOTOS_HVAE,
        likelihood="local-cross",
        init_from="runs/photos-hvae",
        kl_warmup_steps=0,
        steps=26000,
        learning_rate=3e-4,
        seed=1,
        eval_every=4000,
        checkpoint_every=4000,
    ),
    # Kingma & Welling's binarized-MNIST MLP (784-400-20, Bernoulli, dynamic binarization).
    "mnist": dict(_BINARIZED_MLP, data="tfds:mnist"),
    # The same model on real Fashion-MNIST, from Debian's dataset-fashion-mnist idx files.
    "fashion-mnist": dict(_BINARIZED_MLP, data=FASHION_MNIST_IDX),
    "fashion-mnist-conv": dict(
        data=FASHION_MNIST_IDX,
        model="conv",
        likelihood="bernoulli",
        widths=(32, 64),
        latent_channels=4,
        batch_size=128,
        steps=10000,
        learning_rate=1e-3,
        eval_every=2000,
        checkpoint_every=2000,
    ),
    "cifar10": dict(
        data="tfds:cifar10",
        likelihood="coupled",
        widths=(64, 128, 256),
        blocks_per_stage=2,
        latent_channels=16,
        mixture_components=10,
        batch_size=64,
        steps=100000,
        eval_every=5000,
        checkpoint_every=5000,
    ),
    # The accelerator recipe: a deeper ladder in bfloat16; see README for its expected cost.
    "cifar10-hvae": dict(
        data="tfds:cifar10",
        likelihood="coupled",
        model="hvae",
        widths=(128, 256, 256, 256),
        groups_per_stage=(4, 4, 4, 2),
        blocks_per_stage=2,
        latent_channels=16,
        mixture_components=10,
        compute_dtype="bfloat16",
        batch_size=128,
        steps=200000,
        kl_warmup_steps=10000,
        eval_every=10000,
        checkpoint_every=5000,
    ),
    "photos-rd-base": PHOTOS_RATE_DISTORTION,
    # q3 fine-tunes the base on 256x256 crops; every other quality up to q6 moves the finished q3
    # along the curve in 200 steps of its own lambda, and q7 starts from the finished q6-long.
    **{
        f"photos-rd-q{q}": dict(RATE_DISTORTION_QUALITY, rd_lambda=lmbda) if q == 3 else dict(
            RATE_DISTORTION_QUALITY, rd_lambda=lmbda, init_from="runs/photos-rd-q3", steps=200, eval_every=100,
        )
        for q, lmbda in enumerate(RATE_DISTORTION_LAMBDAS[:6], 1)
    },
    # 200 steps leave a quality near q3 (q6 gained 3.0-3.5 dB PSNR for 13-16% more bits on held-out
    # photographs in 3000 more): the -long stages continue each at its own lambda, and are what ships.
    **{
        f"photos-rd-q{q}-long": dict(
            RATE_DISTORTION_QUALITY, rd_lambda=RATE_DISTORTION_LAMBDAS[q - 1], init_from=f"runs/photos-rd-q{q}",
            steps=3000 if q == 6 else 1500, eval_every=500, checkpoint_every=250,
        )
        for q in (1, 3, 5, 6)
    },
    "photos-rd-q7": dict(
        RATE_DISTORTION_QUALITY, rd_lambda=RATE_DISTORTION_LAMBDAS[6], init_from="runs/photos-rd-q6-long",
        steps=1500, eval_every=500, checkpoint_every=250,
    ),
    # Burda et al.'s Table 1 models; the objective and k come from the row (see benchmarks.reproduce).
    "iwae-mnist-1layer": BURDA_ONE_LAYER,
    "iwae-mnist-2layer": BURDA_TWO_LAYERS,
}


def preset(name: str, overrides: dict | None = None) -> Config:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return dataclasses.replace(Config(), **{**PRESETS[name], **(overrides or {})})


class ConfigError(ValueError):
    """A configuration field whose value cannot work; ``field`` names it (the CLI maps it to a flag)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


CHOICES = {
    "model": ("mlp", "conv", "hvae", "stochastic_mlp", "hyperprior"),
    "likelihood": tuple(likelihoods.REGISTRY),
    "prior": ("standard", "mog", "vamp"),
    "binarize": ("dynamic", "static"),
    "objective": ("elbo", "iwae"),
    "kl_estimate": ("closed_form", "sampled"),
    "lr_schedule": ("cosine", "burda"),
    "compute_dtype": ("float32", "bfloat16"),
    "output_bias": ("zero", "data_mean", "fit"),
}
_POSITIVE_INTS = (
    "crop_size", "mixture_components", "prior_components", "latent_dim", "latent_channels", "depth", "patch_size",
    "output_kernel", "batch_size", "k", "steps_per_dispatch", "eval_batch_size", "grid_size",
)  # fmt: skip
_NON_NEGATIVE_INTS = (
    "steps", "warmup_steps", "kl_warmup_steps", "blocks_per_stage", "seed", "log_every", "eval_every",
    "checkpoint_every",
)  # fmt: skip
_NON_NEGATIVE_FLOATS = (
    "weight_decay", "grad_clip", "skip_grad_norm", "skip_grad_norm_factor", "free_bits", "end_learning_rate_ratio",
)  # fmt: skip


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate(config: Config) -> Config:
    """``config`` if every field can work, else a ``ConfigError`` naming the first that cannot.

    Checks types, ranges and names field by field, and what fields need of each other; what
    depends on the data (batch size against the training set) is checked where the data is opened.
    """
    for field, choices in CHOICES.items():
        if getattr(config, field) not in choices:
            raise ConfigError(field, f"expected one of {', '.join(choices)}, got {getattr(config, field)!r}")
    for field in _POSITIVE_INTS:
        if not (_is_int(getattr(config, field)) and getattr(config, field) >= 1):
            raise ConfigError(field, f"expected an integer >= 1, got {getattr(config, field)!r}")
    for field in _NON_NEGATIVE_INTS:
        if not (_is_int(getattr(config, field)) and getattr(config, field) >= 0):
            raise ConfigError(field, f"expected an integer >= 0, got {getattr(config, field)!r}")
    for field in _NON_NEGATIVE_FLOATS:
        if not (_is_number(getattr(config, field)) and getattr(config, field) >= 0):
            raise ConfigError(field, f"expected a finite number >= 0, got {getattr(config, field)!r}")
    for field in ("permute_channels", "download", "reshuffle", "mean_scale"):
        if not isinstance(getattr(config, field), bool):
            raise ConfigError(field, f"expected true or false, got {getattr(config, field)!r}")
    if not (_is_number(config.rd_lambda) and config.rd_lambda > 0):
        raise ConfigError("rd_lambda", f"expected a finite number > 0, got {config.rd_lambda!r}")
    if config.model == "hyperprior" and config.crop_size % 64:
        raise ConfigError("crop_size", f"the hyperprior codec's crops are multiples of 64 pixels, got {config.crop_size}")
    if not (_is_number(config.learning_rate) and config.learning_rate > 0):
        raise ConfigError("learning_rate", f"expected a finite number > 0, got {config.learning_rate!r}")
    if not (_is_number(config.max_saturation) and config.max_saturation >= 1):
        raise ConfigError("max_saturation", f"expected a finite number >= 1 (1: off), got {config.max_saturation!r}")
    if not (_is_number(config.adam_eps) and config.adam_eps > 0):
        raise ConfigError("adam_eps", f"expected a finite number > 0, got {config.adam_eps!r}")
    for field in ("adam_b1", "adam_b2", "ema_decay"):
        if not (_is_number(getattr(config, field)) and 0 <= getattr(config, field) < 1):
            raise ConfigError(field, f"expected a number in [0, 1), got {getattr(config, field)!r}")
    if config.obs_var is not None and not (_is_number(config.obs_var) and config.obs_var > 0):
        raise ConfigError("obs_var", f"expected None (learned) or a finite number > 0, got {config.obs_var!r}")
    if not isinstance(config.init_from, str):
        raise ConfigError("init_from", f"expected a run directory, pretrained:NAME or empty, got {config.init_from!r}")
    if config.channels not in (None, 1, 3):
        raise ConfigError("channels", f"expected None (as the source gives them), 1 or 3, got {config.channels!r}")
    for field, minimum, allow_empty in (
        ("widths", 1, False), ("latent_sizes", 1, False), ("hidden", 1, True), ("groups_per_stage", 0, False),
        ("scales", 1, False), ("zooms", 2, True),
    ):  # fmt: skip
        value = getattr(config, field)
        if not (isinstance(value, tuple) and all(_is_int(v) and v >= minimum for v in value)) or (
            not value and not allow_empty
        ):
            raise ConfigError(field, f"expected a tuple of integers >= {minimum}, got {value!r}")
    if config.model == "stochastic_mlp" and len(config.widths) != len(config.latent_sizes):
        raise ConfigError(
            "widths", f"stochastic_mlp needs one width per stochastic layer {config.latent_sizes}, got {config.widths}"
        )
    if config.kl_estimate == "sampled" and (config.objective != "elbo" or config.free_bits or config.kl_warmup_steps):
        raise ConfigError(
            "kl_estimate",
            "sampled estimates the ELBO itself (the mean of log w): it needs objective=elbo and no free_bits "
            f"or kl_warmup_steps, got objective={config.objective!r}, free_bits={config.free_bits}, "
            f"kl_warmup_steps={config.kl_warmup_steps}",
        )
    if config.model == "hvae" and len(config.groups_per_stage) != len(config.widths):
        raise ConfigError(
            "groups_per_stage", f"expected one count per stage of widths {config.widths}, got {config.groups_per_stage}"
        )
    return config


def _parse_value(key, text, annotation):
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in typing.get_args(annotation)
    if optional:
        if text.lower() == "none":
            return None
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    try:
        if annotation is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if annotation in (int, float, str):
            return annotation(text)
        # tuple[int, ...]: comma separated
        return tuple(int(part) for part in text.replace("(", "").replace(")", "").split(",") if part.strip())
    except ValueError:
        raise ConfigError(key, f"expected a value of type {annotation}, got {text!r}") from None


def parse_overrides(assignments: list[str]) -> dict:
    """``["steps=100", "widths=16,32"]`` -> ``{"steps": 100, "widths": (16, 32)}``, checked by name and
    type; ``none`` sets an optional field to None."""
    overrides = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ValueError(f"{assignment!r}: expected key=value")
        if key not in FIELD_TYPES:
            raise ValueError(f"{assignment!r}: unknown config key {key!r}; known keys: {', '.join(FIELD_TYPES)}")
        overrides[key] = _parse_value(key, text.strip(), FIELD_TYPES[key])
    return overrides


def to_json(config: Config) -> str:
    return json.dumps(dataclasses.asdict(config), indent=2)


# Files written before these fields became optional used 0 or "" for "unset".
_LEGACY_UNSET = {"channels": 0, "data_dir": "", "manual_dir": "", "obs_var": 0.0, "activation": ""}


def from_json_file(path: Path) -> Config:
    """The configuration a run's ``config.json`` holds; a clear error naming the file if it is
    not valid JSON, has unknown keys, or a value that cannot work."""
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a valid config file ({error})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a JSON object of config fields, got {type(values).__name__}")
    unknown = set(values) - set(FIELD_TYPES)
    if unknown:
        raise ValueError(f"{path}: unknown config keys {sorted(unknown)}")
    values = {k: None if k in _LEGACY_UNSET and v == _LEGACY_UNSET[k] else v for k, v in values.items()}
    try:
        return validate(Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}))
    except ConfigError as error:
        raise ValueError(f"{path}: {error}") from None


def build_likelihood(config: Config):
    """The likelihood a (validated) configuration names, with the options it takes of
    ``mixture_components`` and ``obs_var``."""
    return likelihoods.from_name(config.likelihood, num_components=config.mixture_components, obs_var=config.obs_var)


def build_prior(config: Config):
    """The prior a (validated) configuration names."""
    return {
        "standard": lambda: priors.StandardNormal(),
        "mog": lambda: priors.MixtureOfGaussians(config.prior_components),
        "vamp": lambda: priors.VampPrior(config.prior_components),
    }[config.prior]()


DEFAULT_ACTIVATIONS = {"mlp": "relu", "stochastic_mlp": "tanh", "conv": "silu", "hvae": "silu"}


def build_model(config: Config, data_shape: tuple[int, int, int]):
    """The model a configuration describes, for images of ``data_shape``."""
    validate(config)
    if config.model == "hyperprior":
        from vae_jax.rate_distortion import HyperpriorCodec

        dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.compute_dtype]
        return HyperpriorCodec(tuple(data_shape), width=config.widths[0], latent_channels=config.latent_channels,
                               mean_scale=config.mean_scale, dtype=dtype)  # fmt: skip
    # One channel (or a greyscale photo under an RGB preset) has nothing to couple: the coupled
    # likelihoods become the independent mixture there (the local ones lose their neighbours too).
    likelihood, prior = build_likelihood(config).for_data_shape(data_shape), build_prior(config)
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.compute_dtype]
    common = dict(likelihood=likelihood, activation=config.activation or DEFAULT_ACTIVATIONS[config.model], dtype=dtype)
    if config.model == "mlp":
        return architectures.mlp_vae(data_shape, hidden=config.hidden, latent_dim=config.latent_dim, prior=prior, **common)
    if config.model == "stochastic_mlp":
        from vae_jax.stochastic_mlp import stochastic_mlp_vae

        return stochastic_mlp_vae(
            data_shape, widths=config.widths, depth=config.depth, latent_sizes=config.latent_sizes, **common
        )
    convolutional = dict(widths=config.widths, blocks_per_stage=config.blocks_per_stage,
                         latent_channels=config.latent_channels, prior=prior, **common,
                         patch_size=config.patch_size)  # fmt: skip
    if config.model == "conv":
        return architectures.conv_vae(data_shape, **convolutional, output_kernel=config.output_kernel)
    if config.model == "hvae":
        from vae_jax.hierarchical import hierarchical_vae

        return hierarchical_vae(data_shape, groups_per_stage=config.groups_per_stage, **convolutional)
