"""The spec language as pydantic models: one class per YAML section.

Every model forbids unknown keys and is frozen. Searchable fields hold either a fixed
value or an :class:`IntRange` / :class:`FloatRange` / :class:`Choice` (see ``_values``).
The JSON Schema that ``resnas schema`` prints is generated from these classes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, model_validator

from resnas.space._values import searchable

ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "sigmoid")
NORMS = ("batch", "layer", "group", "none")
BLOCK_TYPES = ("basic", "bottleneck", "plain", "mlp", "dense", "transformer")
NETWORK_KINDS = ("conv2d", "conv1d", "mlp", "transformer")
MERGES = ("add", "concat")
BRANCH_SCALES = ("none", "rezero", "skipinit", "layerscale")
CONNECTION_KINDS = ("identity", "projection", "pad", "gated")
GATE_MODES = ("shortcut", "highway")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("onecycle", "cosine", "constant")
BUILTIN_DATASETS = ("digits", "mnist1d", "synthetic", "cifar10")
# Metrics a trial records; any of them may be an objective.
METRICS = (
    "val_accuracy",
    "val_loss",
    "train_loss",
    "train_seconds",
    "train_flops",
    "params",
    "peak_memory_mb",
    "latency_ms",
)

# Upper bounds keep every range a short list and every network buildable; each is far
# beyond what a search on one machine would try.
MAX_DEPTH = 1000  # blocks in one stage
MAX_CHANNELS = 65_536
MAX_STRIDE = 64
MAX_KERNEL = 63
MAX_SPAN = 1000
MAX_COUNT = 100_000  # connections in one network
MAX_CLASSES = 100_000
MAX_SAMPLES = 10_000_000
MAX_BATCH = 1_048_576
MAX_EPOCHS = 100_000
MAX_SEED = 2**31 - 1  # numpy and torch take seeds below 2**32; workers add to it

SDepth = searchable("int", minimum=1, maximum=MAX_DEPTH)
SChannels = searchable("int", minimum=1, maximum=MAX_CHANNELS)
SStride = searchable("int", minimum=1, maximum=MAX_STRIDE)
SSpan = searchable("int", minimum=1, maximum=MAX_SPAN)
SCount = searchable("int", minimum=0, maximum=MAX_COUNT)
SEpochs = searchable("int", minimum=1, maximum=MAX_EPOCHS)
SBatch = searchable("int", minimum=1, maximum=MAX_BATCH)
SDecay = searchable("float", minimum=0, maximum=1)
SLr = searchable("float", minimum=0, maximum=100)
SMomentum = searchable("float", minimum=0, maximum=1)
Dim = Annotated[int, Field(ge=1, le=MAX_CHANNELS)]
SActivation = searchable("str", ACTIVATIONS)
SNorm = searchable("str", NORMS)
SBlock = searchable("str", BLOCK_TYPES)
SGateMode = searchable("str", GATE_MODES)
SMerge = searchable("str", MERGES)
SBranchScale = searchable("str", BRANCH_SCALES)
SOptimizer = searchable("str", OPTIMIZERS)
SSchedule = searchable("str", SCHEDULES)


class _Section(BaseModel):
    # strict: no string is read as a number (the JSON Schema agrees); no nan or infinity.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class DataSpec(_Section):
    # A built-in name, or "package.module:function" returning (x, y) arrays.
    dataset: str = "digits"
    val_fraction: float = Field(0.2, gt=0, lt=1)
    # Held out for the exported model's reported accuracy; never used for ranking.
    test_fraction: float = Field(0.2, ge=0, lt=1)
    # cifar10: the directory holding data_batch_*.bin / test_batch.bin.
    path: str | None = None
    # synthetic and custom datasets: input shape without the batch dimension.
    shape: list[Dim] | None = Field(None, min_length=1, max_length=3)
    classes: int | None = Field(None, ge=2, le=MAX_CLASSES)
    # synthetic: how many samples to generate.
    samples: int = Field(1024, ge=16, le=MAX_SAMPLES)
    # Use at most this many samples (for quick runs on large data); null = all.
    limit: int | None = Field(None, ge=16, le=MAX_SAMPLES)


class StemSpec(_Section):
    channels: SChannels = 16
    kernel: int = Field(3, ge=1, le=MAX_KERNEL)
    stride: int = Field(1, ge=1, le=MAX_STRIDE)
    pool: Literal["none", "max"] = "none"


class BlockSpec(_Section):
    type: SBlock = "basic"
    activation: SActivation = "relu"
    norm: SNorm = "batch"
    # bottleneck: output channels = stage channels * expansion (torchvision's Bottleneck.expansion).
    # dense: the bottleneck size (inner width = expansion * growth); transformer: MLP width / model width.
    expansion: int = Field(4, ge=1, le=64)
    # bottleneck: groups of the 3x3 conv (ResNeXt's cardinality); with width_per_group its inner
    # width is int(channels * width_per_group / 64) * groups, as torchvision's ResNeXt.
    groups: int = Field(1, ge=1, le=MAX_CHANNELS)
    width_per_group: int | None = Field(None, ge=1, le=MAX_CHANNELS)
    # dense: channels kept by a transition between dense stages (DenseNet-BC: 0.5).
    compression: float = Field(1.0, gt=0, le=1)
    # transformer: attention heads (the stage channels, the model width, must divide by it).
    heads: int = Field(1, ge=1, le=MAX_CHANNELS)


class StageSpec(_Section):
    depth: SDepth
    channels: SChannels
    stride: SStride = 1


class HeadSpec(_Section):
    # cls: a transformer's CLS token; avg / max pool over positions (or tokens).
    pool: Literal["avg", "max", "cls"] = "avg"
    dropout: float = Field(0.0, ge=0, lt=1)


class NetworkSpec(_Section):
    # transformer: the stem embeds patches of stem.kernel positions as tokens of stem.channels features.
    kind: Literal[NETWORK_KINDS] = "conv2d"  # type: ignore[valid-type]
    stem: StemSpec = StemSpec()
    block: BlockSpec = BlockSpec()
    stages: list[StageSpec] = Field(min_length=1, max_length=64)
    head: HeadSpec = HeadSpec()
    # torch: PyTorch's default init; kaiming: He et al. 2015 (fan_out), as torchvision's ResNet.
    init: Literal["torch", "kaiming"] = "torch"


class GateSpec(_Section):
    mode: SGateMode = "shortcut"
    # A negative bias starts gates mostly closed (Srivastava et al. 2015, "Highway Networks").
    bias_init: float = Field(-1.0, ge=-100, le=100)


class ResidualSpec(_Section):
    kinds: list[Literal["identity", "projection", "pad", "gated"]] = Field(
        ["identity"], min_length=1, json_schema_extra={"uniqueItems": True}
    )
    # The spans a connection may have (blocks jumped over).
    span: SSpan = 1
    # How many connections the network carries, or "all" for every possible placement.
    count: Literal["all"] | SCount = 0
    scope: Literal["stage", "network"] = "stage"
    on_shape_change: Literal["projection", "pad", "forbid"] = "projection"
    order: Literal["post", "pre"] = "post"
    gate: GateSpec = GateSpec()
    # add, or concatenate the carried tensor (DenseNet); a choice is drawn per connection.
    merge: SMerge = "add"
    # A learned scale on the branch of every block a connection adds into.
    branch_scale: SBranchScale = "none"


class TrainSpec(_Section):
    epochs: SEpochs = 5
    batch_size: SBatch = 128
    optimizer: SOptimizer = "sgd"
    lr: SLr = 0.05
    momentum: SMomentum = 0.9
    weight_decay: SDecay = 5e-4
    schedule: SSchedule = "onecycle"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # Stochastic depth: the last block's drop rate, linearly less for earlier ones (timm's drop_path).
    drop_path: searchable("float", minimum=0, maximum=1) = 0.0  # type: ignore[valid-type]
    # auto: bf16 autocast on CUDA, fp32 on CPU.
    precision: Literal["auto", "fp32", "bf16"] = "auto"


class ObjectiveSpec(_Section):
    metric: Literal[METRICS]  # type: ignore[valid-type]
    direction: Literal["maximize", "minimize"]


class MutationSpec(_Section):
    # Relative weights of what one evolution mutation changes: a connection (add, remove,
    # move, change its kind or span), a network value (a depth or width), a training value.
    connection: float = Field(0.7, ge=0)
    network: float = Field(0.15, ge=0)
    train: float = Field(0.15, ge=0)


class EvolutionSpec(_Section):
    # Regularized evolution (Real et al. 2019): the population is the last `population`
    # finished trials; a parent is the best of `sample_size` of them drawn at random.
    population: int = Field(10, ge=2, le=10_000)
    sample_size: int = Field(3, ge=1, le=10_000)
    mutation: MutationSpec = MutationSpec()


class ScreenSpec(_Section):
    """Draw ``pool`` candidates, score them without training, train the best ``keep``."""

    score: Literal["grad_norm", "snip", "synflow", "jacob_cov", "naswot", "grad_flow", "params", "flops"]
    pool: int = Field(ge=2, le=100_000)
    keep: int = Field(1, ge=1, le=100_000)

    @model_validator(mode="after")
    def _keep_below_pool(self) -> ScreenSpec:
        if self.keep >= self.pool:
            raise ValueError(f"keep ({self.keep}) must be smaller than pool ({self.pool})")
        return self


class OneShotSettings(_Section):
    """``search.oneshot``: the one-shot strategy (resnas.oneshot), one supernet instead of many trials."""

    # Supernet training epochs: the strategy's budget. The derived network then trains train.epochs.
    epochs: int = Field(10, ge=1)
    # alternating: weights on the training split, architecture weights on the validation split
    # (first-order DARTS, Liu et al. 2019); single: both on the training split, with `sparsity`.
    mode: Literal["alternating", "single"] = "alternating"
    # Adam on the architecture weights, as DARTS (betas 0.5, 0.999).
    arch_lr: float = Field(0.01, gt=0)
    arch_weight_decay: float = Field(0.001, ge=0)
    # Epochs of weight training before the architecture weights move, so they compare trained kinds.
    warmup: int = Field(2, ge=0)
    # Softmax temperature of the architecture weights, annealed geometrically from start to end.
    temperature: tuple[PositiveFloat, PositiveFloat] = (1.0, 0.3)
    # Penalty per expected connection (summed weight of every kind but none) above count's upper bound.
    sparsity: float = Field(0.02, ge=0)
    # How the derivation ranks connections: perturbation (Wang et al. 2021) or magnitude.
    select: Literal["perturbation", "magnitude"] = "perturbation"


class SearchSettings(_Section):
    trials: int = Field(20, ge=1, le=1_000_000)
    # auto: TPE for one objective, NSGA-II for several; evolution: regularized evolution.
    sampler: Literal["auto", "tpe", "nsga2", "random", "grid", "qmc", "evolution"] = "auto"
    evolution: EvolutionSpec = EvolutionSpec()
    # Train the reference points first: the backbone with no connections, and with a span-1
    # identity (pad/projection across a shape change) around every block (classic ResNet).
    baselines: bool = True
    # After the search, retrain the best `confirm` trials with `--seeds` more seeds each.
    confirm: int = Field(0, ge=0, le=10_000)
    # Epochs are the budget; single-objective studies only.
    pruner: Literal["none", "median", "hyperband"] = "none"
    seed: int = Field(0, ge=0, le=MAX_SEED)
    # Seconds one trial may train before it is ended as pruned; null = no limit.
    trial_timeout: float | None = Field(None, gt=0, le=10**7)
    # Training-free screening; null = train every candidate the sampler proposes.
    screen: ScreenSpec | None = None
    # sample: every trial samples and trains an architecture; oneshot: one supernet, then its derivation.
    strategy: Literal["sample", "oneshot"] = "sample"
    oneshot: OneShotSettings = OneShotSettings()


class SpecModel(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    description: str = ""
    data: DataSpec = DataSpec()
    network: NetworkSpec
    residual: ResidualSpec = ResidualSpec()
    train: TrainSpec = TrainSpec()
    objectives: list[ObjectiveSpec] = Field([ObjectiveSpec(metric="val_accuracy", direction="maximize")], min_length=1)
    search: SearchSettings = SearchSettings()


def json_schema() -> dict[str, Any]:
    schema = SpecModel.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "resnas search space"
    return schema
