"""Declarative training configs: one TOML file is one run, inheriting a named base.

A config file may name a ``base`` (another config shipped in ``nptface/server/training/configs/`` or a path
relative to the file); its tables are merged key by key over the base's. Command-line
``--set section.key=value`` overrides come last, read by
:func:`nptface.core.run_settings.parse_override` (TOML literals, else plain text). The result is validated
into typed dataclasses: an unknown key or a value of the wrong type is an error that names the
key and the file it came from, not a silent default; so is a head parameter the head does not
take, an NPT margin no embedding can reach, and a ``model.init`` of another architecture. A config (or override) that changes
``head.name`` without giving ``head.params`` gets the new head's defaults, never the old
head's parameters. All of this happens at load time, before any data is read. The resolved config and its hash are saved
with every run and checkpoint, so a run can always be reproduced and a resume can refuse a
checkpoint from a different config.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from nptface.core.heads import HEADS, check_head_params, head_defaults
from nptface.core.losses import check_npt_margin
from nptface.core.mobilefacenet import MobileFaceNetConfig
from nptface.core.optim_recipe import WeightDecay
from nptface.core.run_settings import parse_override, settings_hash
from nptface.server.training.warm_start import check_init


class ConfigError(ValueError):
    """A config file, base or override that cannot be read or does not fit the schema."""


@dataclass
class RunSection:
    name: str = "run"
    seed: int = 0
    output_dir: str = "runs"
    deterministic: bool = True  # deterministic kernels where torch has them (bitwise CPU resume)


@dataclass
class DataSection:
    kind: str = "synthetic"  # synthetic | imagefolder | recordio
    path: str = ""  # imagefolder root or recordio prefix
    identities: int = 300  # synthetic: server identities to train on
    images_per_identity: int = 30
    domain: str = "wild"
    lookalike_share: float = 0.3
    in_memory: bool = True  # synthetic: render once and keep in RAM; false streams (renders in workers)
    num_workers: int = 0
    skip_bad: bool = False
    flip: bool = True  # random horizontal flip augmentation
    # imagefolder / recordio: identities kept out of training (seeded choice) and verified on.
    heldout_identities: int = 0


@dataclass
class ModelSection:
    width: float = 1.0
    input_size: int = 112
    embedding_dim: int = 256
    # Fine-tune from this model: a run directory, or a model.safetensors with its checkpoint.json
    # beside it (nptface.server.training.warm_start). "" trains from scratch.
    init: str = ""


@dataclass
class HeadSection:
    name: str = "npt"
    # Semi-hard negatives: the recipe that never collapsed from scratch (configs/base.toml says why);
    # negatives = "hardest" is the paper's exact NPT.
    params: dict[str, Any] = field(default_factory=lambda: {"k": 6, "delta": 1.0, "r": 1.0, "negatives": "semihard"})
    # NPT with more classes than this trains through the streamed top-k head (same results, no
    # [batch, classes] matrix, gradient on B*(k+1) proxy rows); 0 never switches.
    scalable_above: int = 20000
    chunk_size: int = 65536  # classes per chunk of the streamed head
    candidate_rate: float = 0.0  # streamed head: search negatives in this share of classes (0 = exact)
    # Under torchrun, keep each rank's rows of the proxies (and their momentum) instead of all of
    # them: "auto" when the streamed head is chosen (with candidate_rate = 0 and exact hardest
    # negatives: the sharded search has no semi-hard selection), true for any NPT head with an
    # integer k and negatives = "hardest", false never. One process has nothing to shard. Not in the config
    # hash: like the number of processes, it splits the work without changing what is trained.
    shard_proxies: bool | str = "auto"


@dataclass
class OptimSection:
    epochs: int = 65
    batch_size: int = 64  # global: split evenly over distributed ranks
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    schedule: str = "step"  # step | cosine | poly
    milestones: list[float] = field(default_factory=lambda: [30.0, 45.0])  # epochs (step schedule)
    poly_power: float = 2.0
    warmup_epochs: float = 0.0
    # The paper's layer-wise decay (nptface.core.optim_recipe): proxies, embedding layer, rest of the backbone.
    weight_decay_proxies: float = WeightDecay.proxies
    weight_decay_embedding: float = WeightDecay.embedding
    weight_decay_backbone: float = WeightDecay.backbone
    grad_clip: float = 0.0  # max global grad norm; 0 disables
    # The streamed NPT head's proxies: true = a sparse gradient of the B*(k+1) touched rows and
    # LazyRowSGD (nptface.server.training.lazy_sgd: only those rows written, the others' momentum
    # and weight decay applied lazily, exactly: the run is dense SGD's up to rounding); false =
    # dense gradient and SGD over all rows. "auto": true on CPU wherever true is accepted (the streamed
    # or sharded head, no replicated DDP proxies, grad_clip = 0; not yet run on CUDA), else false; at 10k identities x 3
    # seeds it matched dense SGD's accuracy (BENCHMARKS.md). In the config hash only when true.
    sparse_proxies: bool | str = "auto"


@dataclass
class EvalSet:
    kind: str = "synthetic"  # synthetic | imagefolder | bin | lfw
    name: str = ""
    path: str = ""  # folder (imagefolder, lfw), .bin file
    pairs: str = ""  # imagefolder: optional 'a b 1|0' file; lfw: pairs.txt
    # Without a pairs file: "all" genuine pairs + as many impostors, or "lfw": 10 LFW-style folds.
    pair_protocol: str = "all"
    per_fold: int = 300  # pair_protocol "lfw": pairs of each kind per fold
    skip_bad: bool = False  # imagefolder / lfw: skip and count undecodable images instead of failing
    identities: int = 100  # synthetic held-out identities
    images_per_identity: int = 10
    domain: str = "wild"
    # The protocol seed: draws generated pairs (and renders synthetic faces). Not run.seed, so runs
    # of different seeds, and `nptface eval` of the same folder, score the same pairs.
    seed: int = 0


@dataclass
class EvalSection:
    every_epochs: int = 1
    flip: bool = False
    batch_size: int = 256
    n_folds: int = 10  # the LFW protocol's 10 folds
    sets: list[EvalSet] = field(default_factory=lambda: [EvalSet(name="synthetic-heldout")])


@dataclass
class DeviceSection:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "bf16"  # bf16 | none (CUDA only; CPU runs in fp32)
    channels_last: bool = True  # NHWC activations and weights (CUDA and CPU alike)
    compile: bool = False
    # 0 = the cores this process may use that the load average leaves idle, at least one
    # (nptface.core.cpu_threads); on a shared machine set it to what you can count on (often 1)
    cpu_threads: int = 0


@dataclass
class LogSection:
    every_steps: int = 20
    tensorboard: bool = False
    progress: bool = True


@dataclass
class GuardSection:
    """The collapse guard (:mod:`nptface.server.training.collapse_guard`): batch spread under threshold."""

    action: str = "warn"  # warn | stop | off
    # Mean batch spread (participation ratio of the unit batch embeddings) below which a log window
    # counts as collapsed. After epoch 1 a collapsed run (exact NPT, 1000 x 6, d = 128) read
    # 1.9-2.2; the shipped recipe 2.9 at its dip (epoch 1.0) and 6.2-6.4 at the end. Collapse is an
    # absolute count of directions (2-3 whatever d is), so the threshold does not scale with d.
    threshold: float = 2.5
    patience: int = 3  # consecutive collapsed log windows before warning or stopping
    after_epochs: float = 1.0  # healthy runs dip while the embedding space forms (at most half the run)


@dataclass
class CheckpointSection:
    every_steps: int = 500
    keep: int = 2


@dataclass
class TrainConfig:
    run: RunSection = field(default_factory=RunSection)
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    head: HeadSection = field(default_factory=HeadSection)
    optim: OptimSection = field(default_factory=OptimSection)
    eval: EvalSection = field(default_factory=EvalSection)
    device: DeviceSection = field(default_factory=DeviceSection)
    log: LogSection = field(default_factory=LogSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    guard: GuardSection = field(default_factory=GuardSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Hash of everything that shapes the weights (not names, paths, logging or workers)."""
        payload = self.to_dict()
        payload["run"].pop("name")
        payload["run"].pop("output_dir")
        payload["data"].pop("num_workers")
        payload["head"].pop("shard_proxies")
        if payload["optim"]["sparse_proxies"] is not True:
            payload["optim"].pop("sparse_proxies")  # off: the hashes runs had before the option existed
        if not payload["model"]["init"]:
            payload["model"].pop("init")  # so runs from scratch keep the hashes they had before init existed
        for volatile in ("log", "checkpoint", "eval", "guard"):
            payload.pop(volatile)
        return settings_hash(payload)


def _shipped_dir() -> Any:
    return resources.files("nptface.server.training") / "configs"


def shipped_configs() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in _shipped_dir().iterdir() if p.name.endswith(".toml"))


def _locate(name_or_path: str, relative_to: Path | None) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml":
        if not candidate.is_absolute() and relative_to is not None and not candidate.exists():
            candidate = relative_to / candidate
        if not candidate.is_file():
            raise ConfigError(f"config file {candidate} not found")
        return candidate
    shipped = _shipped_dir() / f"{name_or_path}.toml"
    if not shipped.is_file():
        raise ConfigError(
            f"no shipped config named {name_or_path!r}; expected one of {shipped_configs()} or a path to a .toml file"
        )
    return Path(str(shipped))


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "params":
            if key == "head" and _names_another_head(merged[key], value):
                merged[key].pop("params")
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _names_another_head(head: dict[str, Any], update: dict[str, Any]) -> bool:
    """Whether ``update`` (a head table) switches ``head`` to another head without giving its params."""
    return (
        "name" in update
        and update["name"] != head.get("name", HeadSection.name)
        and "params" in head
        and "params" not in update
    )


def _read_raw(name_or_path: str, relative_to: Path | None = None, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = _locate(name_or_path, relative_to).resolve()
    if path in seen:
        raise ConfigError(f"config inheritance loops: {' -> '.join(map(str, (*seen, path)))}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    base_name = raw.pop("base", None)
    if base_name is None:
        return raw
    if not isinstance(base_name, str):
        raise ConfigError(f"{path}: 'base' must be a config name or path, got {base_name!r}")
    return _merge(_read_raw(base_name, path.parent, (*seen, path)), raw)


def _apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> None:
    """Apply ``section.key=value`` overrides in order. One that switches ``head.name`` drops the
    config's ``head.params`` first: the new head gets the params the overrides give, else its own
    defaults, never the old head's."""
    parsed = [_parse_override(text) for text in overrides]
    new_names = [value for keys, value in parsed if keys == ["head", "name"]]
    head = raw.get("head")
    if new_names and isinstance(head, dict) and new_names[-1] != head.get("name", HeadSection.name):
        head.pop("params", None)
    for keys, value in parsed:
        _set(raw, keys, value)


# Where the trainer's recipe differs from a head's constructor defaults (which stay the paper's
# exact formulation): NPT trains with semi-hard negatives unless params.negatives says otherwise.
RECIPE_HEAD_PARAMS: dict[str, dict[str, Any]] = {
    "npt": {"negatives": "semihard"},
    "scalable_npt": {"negatives": "semihard"},
}


def _fill_head_params(raw: dict[str, Any]) -> None:
    """A head table without ``params`` gets its named head's defaults (the dataclass default is NPT's);
    either way the recipe's own choices (``RECIPE_HEAD_PARAMS``) fill what the params leave out."""
    head = raw.setdefault("head", {})
    name = head.get("name", HeadSection.name) if isinstance(head, dict) else None
    if name not in HEADS:
        return
    if "params" not in head:
        head["params"] = head_defaults(name)
    if isinstance(head["params"], dict):
        head["params"] = {**RECIPE_HEAD_PARAMS.get(name, {}), **head["params"]}


def _parse_override(text: str) -> tuple[list[str], Any]:
    key, value = parse_override(text, ConfigError, form="section.key=value")
    keys = key.split(".")
    if not all(keys):
        raise ConfigError(f"override {text!r}: empty key; expected section.key=value")
    return keys, value


def _set(raw: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set the value of one parsed override in the raw (unvalidated) tables."""
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {'.'.join(keys)}: {key!r} is not a table")
    node[keys[-1]] = value


def _convert(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table, got {value!r}")
        return _build(annotation, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        (item_type,) = typing.get_args(annotation)
        return [_convert(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table, got {value!r}")
        return dict(value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value


def _build(cls: type, raw: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; expected some of {sorted(known)}")
    kwargs = {name: _convert(value, hints[name], f"{where}.{name}" if where else name) for name, value in raw.items()}
    return cls(**kwargs)


def load_config(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a config (shipped name or path), apply its bases and ``--set`` overrides, validate."""
    raw = _read_raw(name_or_path)
    _apply_overrides(raw, overrides)
    _fill_head_params(raw)
    try:
        config = _build(TrainConfig, raw, "")
    except ConfigError as error:
        raise ConfigError(f"{name_or_path} (with overrides {list(overrides)}): {error}") from None
    validate(config, source=name_or_path)
    return config


def validate(config: TrainConfig, source: str) -> None:
    """Cross-field checks that types alone cannot express."""

    def fail(message: str) -> None:
        raise ConfigError(f"{source}: {message}")

    if config.data.kind not in ("synthetic", "imagefolder", "recordio"):
        fail(f"data.kind must be synthetic, imagefolder or recordio, got {config.data.kind!r}")
    if config.data.kind != "synthetic" and not config.data.path:
        fail(f"data.path is required for data.kind = {config.data.kind!r}")
    if config.data.heldout_identities < 0 or (config.data.kind == "synthetic" and config.data.heldout_identities):
        fail(
            "data.heldout_identities is for imagefolder/recordio data (synthetic held-out identities are an "
            "eval set of their own id range)"
        )
    if config.optim.schedule not in ("step", "cosine", "poly"):
        fail(f"optim.schedule must be step, cosine or poly, got {config.optim.schedule!r}")
    if config.optim.epochs < 1:
        fail(f"optim.epochs must be >= 1, got {config.optim.epochs}")
    if config.optim.batch_size < 2:
        fail(f"optim.batch_size must be >= 2, got {config.optim.batch_size}")
    if config.optim.lr <= 0:
        fail(f"optim.lr must be > 0, got {config.optim.lr}")
    if any(not 0 < m < config.optim.epochs for m in config.optim.milestones):
        fail(f"optim.milestones must be epochs inside (0, {config.optim.epochs}), got {config.optim.milestones}")
    if not 0 <= config.optim.warmup_epochs < config.optim.epochs:
        fail(f"optim.warmup_epochs must lie in [0, epochs), got {config.optim.warmup_epochs}")
    _validate_head(config, fail)
    if config.model.init:
        try:
            check_init(
                config.model.init,
                MobileFaceNetConfig(config.model.embedding_dim, config.model.width, config.model.input_size),
            )
        except ValueError as error:
            fail(f"model.init: {error}")
    shard = config.head.shard_proxies
    if not (shard == "auto" or isinstance(shard, bool)):
        fail(f'head.shard_proxies must be "auto", true or false, got {shard!r}')
    if shard is True and (
        config.head.name != "npt" or not isinstance(config.head.params.get("k", 6), int) or config.head.candidate_rate
    ):
        fail(
            f'head.shard_proxies = true needs head.name = "npt" with an integer params.k and candidate_rate = 0, '
            f"got name {config.head.name!r}, params {config.head.params}, candidate_rate {config.head.candidate_rate}"
        )
    if shard is True and config.head.params.get("negatives", "hardest") != "hardest":
        fail(
            f'head.shard_proxies = true needs head.params.negatives = "hardest" (the sharded top-k search has no '
            f'semi-hard selection), got {config.head.params.get("negatives")!r}; set head.shard_proxies = "auto" '
            f"or false to train semi-hard with replicated proxies"
        )
    sparse = config.optim.sparse_proxies
    if not (sparse == "auto" or isinstance(sparse, bool)):
        fail(f'optim.sparse_proxies must be "auto", true or false, got {sparse!r}')
    if sparse is True and config.head.name != "npt":
        fail(f'optim.sparse_proxies = true needs head.name = "npt" (the streamed head), got {config.head.name!r}')
    if sparse is True and config.optim.grad_clip > 0:
        fail(
            f"optim.sparse_proxies = true cannot clip the sparse proxy gradient; set optim.grad_clip = 0 "
            f"(got {config.optim.grad_clip}) or optim.sparse_proxies = false"
        )
    if config.device.amp not in ("bf16", "none"):
        fail(f"device.amp must be bf16 or none, got {config.device.amp!r}")
    if config.device.cpu_threads < 0:
        fail(f"device.cpu_threads must be >= 0 (0 = the idle cores), got {config.device.cpu_threads}")
    for i, eval_set in enumerate(config.eval.sets):
        if eval_set.kind not in ("synthetic", "imagefolder", "bin", "lfw"):
            fail(f"eval.sets[{i}].kind must be synthetic, imagefolder, bin or lfw, got {eval_set.kind!r}")
        if eval_set.kind != "synthetic" and not eval_set.path:
            fail(f"eval.sets[{i}].path is required for kind {eval_set.kind!r}")
        if eval_set.kind == "lfw" and not eval_set.pairs:
            fail(f"eval.sets[{i}].pairs (LFW's pairs.txt) is required for kind 'lfw'")
        if eval_set.pair_protocol not in ("all", "lfw") or eval_set.per_fold < 1:
            fail(
                f"eval.sets[{i}].pair_protocol must be all or lfw and per_fold >= 1, got "
                f"{eval_set.pair_protocol!r} and {eval_set.per_fold}"
            )
    if config.checkpoint.every_steps < 1 or config.checkpoint.keep < 1:
        fail("checkpoint.every_steps and checkpoint.keep must be >= 1")
    if config.guard.action not in ("warn", "stop", "off"):
        fail(f'guard.action must be "warn", "stop" or "off", got {config.guard.action!r}')
    if config.guard.patience < 1 or config.guard.after_epochs < 0:
        fail(
            f"guard.patience must be >= 1 and guard.after_epochs >= 0, got {config.guard.patience} and "
            f"{config.guard.after_epochs}"
        )


def _validate_head(config: TrainConfig, fail: typing.Callable[[str], None]) -> None:
    head = config.head
    if head.name not in HEADS:
        fail(f"head.name must be one of {sorted(HEADS)}, got {head.name!r}")
    try:
        check_head_params(head.name, head.params)
    except ValueError as error:
        fail(f"head.params: {error}")
    if "delta" in head_defaults(head.name):
        settings = {**head_defaults(head.name), **head.params}
        classes = config.data.identities if config.data.kind == "synthetic" else None
        try:
            check_npt_margin(settings["delta"], settings["r"], classes)
        except ValueError as error:
            fail(f"head.params.delta / head.params.r: {error}")
