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


# What each metric a trial records means; any of them may be an objective.
METRIC_MEANINGS = {
    "val_accuracy": "accuracy on the validation split after the last epoch (0 to 1)",
    "val_loss": "cross-entropy on the validation split after the last epoch",
    "train_loss": "mean cross-entropy over the last epoch's training batches",
    "train_seconds": "wall-clock seconds of training (all epochs, validation included)",
    "train_flops": "forward + backward FLOPs of training: per sample (torch.utils.flop_counter) x samples x epochs",
    "params": "trainable parameters of the network",
    "peak_memory_mb": "memory of one training step in MiB (CUDA: the allocator's peak; CPU: weights, "
    "gradients, optimizer state and saved activations)",
    "latency_ms": "median batch-1 inference time in milliseconds, in eval mode",
}
assert tuple(METRIC_MEANINGS) == METRICS


def _drop_default(schema: dict[str, Any]) -> None:
    """The default of this key follows another key; the description says how."""
    schema.pop("default", None)


class _Section(BaseModel):
    # strict: no string is read as a number (the JSON Schema agrees); no nan or infinity.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class DataSpec(_Section):
    """`data`: which dataset, how it is split and how much of it is used."""

    dataset: str = Field(
        "digits",
        description="digits (scikit-learn's 8x8 digits, 1797 samples, 1x8x8, 10 classes), mnist1d (5000 "
        "samples, 1x40, 10 classes, generated offline), synthetic (Gaussian clusters; needs shape and classes), "
        "cifar10 (needs path), or 'module:function' naming your own function that returns (x, y) arrays "
        "(needs shape and classes; runs only with --allow-code or RESNAS_ALLOW_CODE=1).",
    )
    val_fraction: float = Field(
        0.2, gt=0, lt=1, description="Fraction of the samples held out for validation: trials are ranked on it."
    )
    test_fraction: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Fraction held out for the exported model's reported accuracy; never used for ranking.",
    )
    path: str | None = Field(
        None, description="cifar10 only: the directory holding data_batch_*.bin and test_batch.bin."
    )
    shape: list[Dim] | None = Field(
        None,
        min_length=1,
        max_length=3,
        description="Input shape of one sample, without the batch dimension, channels first: [channels, h, w] "
        "for conv2d, [channels, length] for conv1d, any for mlp. Required for synthetic and code datasets; "
        "the built-in datasets have their own.",
    )
    classes: int | None = Field(
        None,
        ge=2,
        le=MAX_CLASSES,
        description="Number of classes; labels are integers 0 .. classes-1. Required for synthetic and code "
        "datasets; the built-in datasets have their own.",
    )
    samples: int = Field(1024, ge=16, le=MAX_SAMPLES, description="synthetic only: how many samples to generate.")
    limit: int | None = Field(
        None,
        ge=16,
        le=MAX_SAMPLES,
        description="Use at most this many samples (a random subset, the same for every trial; for quick runs "
        "on large data); null = all.",
    )


class StemSpec(_Section):
    """`network.stem`: the first layer, from the input channels to the first stage."""

    channels: SChannels = Field(16, description="Output channels of the stem (features for an mlp).")
    kernel: int = Field(
        3,
        ge=1,
        le=MAX_KERNEL,
        description="Convolution kernel size; for a transformer, the patch length (positions per token).",
    )
    stride: int = Field(1, ge=1, le=MAX_STRIDE, description="Convolution stride (conv networks only).")
    pool: Literal["none", "max"] = Field(
        "none", description="none, or max: a max pool (kernel 3, stride 2) after the stem (conv networks only)."
    )


class BlockSpec(_Section):
    """`network.block`: the block every stage repeats `depth` times."""

    type: SBlock = Field(
        "basic",
        description="basic (two convs, ResNet-18/34), bottleneck (1x1, 3x3, 1x1, ResNet-50), plain (one conv), "
        "dense (DenseNet layer), mlp (linear layers), transformer (attention + MLP sublayers). Default: the "
        "block that fits network.kind: basic for conv2d and conv1d, mlp for mlp, transformer for transformer. "
        "Searchable.",
        json_schema_extra=_drop_default,
    )
    activation: SActivation = Field("relu", description="relu, gelu, silu, tanh or sigmoid. Searchable.")
    norm: SNorm = Field(
        "batch",
        description="batch, layer, group or none: the normalisation after each conv or linear layer. "
        "Default: layer for a transformer, batch otherwise. Searchable.",
        json_schema_extra=_drop_default,
    )
    expansion: int = Field(
        4,
        ge=1,
        le=64,
        description="bottleneck: output channels = stage channels x expansion (torchvision's Bottleneck.expansion); "
        "dense: the bottleneck size (inner width = expansion x growth); transformer: MLP width / model width.",
    )
    groups: int = Field(
        1,
        ge=1,
        le=MAX_CHANNELS,
        description="bottleneck only: groups of the 3x3 conv (ResNeXt's cardinality).",
    )
    width_per_group: int | None = Field(
        None,
        ge=1,
        le=MAX_CHANNELS,
        description="bottleneck only: with groups, the inner width is int(channels x width_per_group / 64) x groups, "
        "as torchvision's ResNeXt; null = the stage channels.",
    )
    compression: float = Field(
        1.0,
        gt=0,
        le=1,
        description="dense only: the fraction of channels a transition between dense stages keeps (DenseNet-BC: 0.5).",
    )
    heads: int = Field(
        1,
        ge=1,
        le=MAX_CHANNELS,
        description="transformer only: attention heads; the model width (the stage channels) must divide by it.",
    )


class StageSpec(_Section):
    """One entry of `network.stages`: blocks of one width."""

    depth: SDepth = Field(description="Blocks in the stage. Searchable.")
    channels: SChannels = Field(
        description="Width of the stage's blocks (a dense stage: its growth rate; a transformer: the model width). "
        "Searchable."
    )
    stride: SStride = Field(
        1, description="Stride of the stage's first block (conv networks only; 2 halves the resolution). Searchable."
    )


class HeadSpec(_Section):
    """`network.head`: pooling and the final linear classifier."""

    pool: Literal["avg", "max", "cls"] = Field(
        "avg", description="avg or max: pool over positions (or tokens); cls: a transformer's CLS token."
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout before the classifier.")


class NetworkSpec(_Section):
    """`network`: the backbone whose residual connections are searched."""

    kind: Literal[NETWORK_KINDS] = Field(  # type: ignore[valid-type]
        "conv2d",
        description="conv2d (inputs [channels, h, w]), conv1d (inputs [channels, length]), mlp (any input, "
        "flattened) or transformer (the stem embeds patches of stem.kernel positions as tokens of stem.channels "
        "features).",
    )
    stem: StemSpec = Field(StemSpec(), description="The first layer; see network.stem.")
    block: BlockSpec = Field(
        BlockSpec(), description="The block type and its options; the defaults follow kind. See network.block."
    )
    stages: list[StageSpec] = Field(
        min_length=1, max_length=64, description="The stages, in order: each a list entry {depth, channels, stride}."
    )
    head: HeadSpec = Field(HeadSpec(), description="Pooling and classifier; see network.head.")
    init: Literal["torch", "kaiming"] = Field(
        "torch",
        description="torch: PyTorch's default initialisation; kaiming: He et al. 2015 (fan_out), as torchvision's "
        "ResNet.",
    )

    @model_validator(mode="before")
    @classmethod
    def _block_follows_kind(cls, data: Any) -> Any:
        """An mlp is built of mlp blocks, a transformer of transformer blocks with LayerNorm, unless told otherwise."""
        if not isinstance(data, dict) or data.get("kind") not in ("mlp", "transformer"):
            return data
        block = data.get("block", {})
        if not isinstance(block, dict):
            return data
        defaults = {"type": data["kind"]}
        if data["kind"] == "transformer":
            defaults["norm"] = "layer"
        return {**data, "block": {**defaults, **block}}


class GateSpec(_Section):
    """`residual.gate`: how a gated connection mixes."""

    mode: SGateMode = Field(
        "shortcut",
        description="shortcut: out + t*S(h); highway: t*F + (1-t)*S(h), with t a learned sigmoid gate. Searchable.",
    )
    bias_init: float = Field(
        -1.0,
        ge=-100,
        le=100,
        description="Initial gate bias; a negative bias starts gates mostly closed (Srivastava et al. 2015).",
    )


class ResidualSpec(_Section):
    """`residual`: where connections may go, which kinds, how many."""

    kinds: list[Literal["identity", "projection", "pad", "gated"]] = Field(
        ["identity"],
        min_length=1,
        json_schema_extra={"uniqueItems": True},
        description="The connection kinds a placement may get: identity (h as is), projection (1x1 conv + norm), "
        "pad (He et al.'s option A: subsample, zero-pad the new channels), gated (a learned gate; see gate).",
    )
    span: SSpan = Field(1, description="The spans a connection may have (blocks jumped over). Searchable.")
    count: Literal["all"] | SCount = Field(
        0,
        description='How many connections the network carries, or "all" for every possible placement. Searchable.',
    )
    scope: Literal["stage", "network"] = Field(
        "stage", description="stage: connections stay inside a stage; network: they may cross stage boundaries."
    )
    on_shape_change: Literal["projection", "pad", "forbid"] = Field(
        "projection",
        description="What an identity becomes where the shapes differ (a stride or a width change): projection, "
        "pad, or forbid (no connection there).",
    )
    order: Literal["post", "pre"] = Field(
        "post",
        description="post: add, then the block's last activation (ResNet v1); pre: pre-activation blocks, "
        "nothing after the addition (ResNet v2).",
    )
    gate: GateSpec = Field(GateSpec(), description="Options of gated connections; see residual.gate.")
    merge: SMerge = Field(
        "add",
        description="add, or concat: concatenate the carried tensor (DenseNet); a choice is drawn per connection.",
    )
    branch_scale: SBranchScale = Field(
        "none",
        description="A learned scale on the branch of every block a connection adds into: none, rezero (a scalar "
        "at 0, Bachlechner et al. 2020), skipinit (a scalar at 0, De & Smith 2020), layerscale (one factor per "
        "channel at a small epsilon, CaiT). Searchable.",
    )


class TrainSpec(_Section):
    """`train`: how each candidate is trained. Searchable values are tuned with the architecture."""

    epochs: SEpochs = Field(5, description="Training epochs per trial: the budget a pruner stops early. Searchable.")
    batch_size: SBatch = Field(128, description="Samples per training batch. Searchable.")
    optimizer: SOptimizer = Field("sgd", description="sgd (Nesterov momentum), adam or adamw. Searchable.")
    lr: SLr = Field(0.05, description="Learning rate (the peak, under onecycle). Searchable.")
    momentum: SMomentum = Field(0.9, description="sgd's momentum (ignored by adam and adamw). Searchable.")
    weight_decay: SDecay = Field(5e-4, description="L2 weight decay (decoupled under adamw). Searchable.")
    schedule: SSchedule = Field(
        "onecycle",
        description="onecycle (warm up to lr, then anneal), cosine (anneal from lr) or constant. Searchable.",
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the cross-entropy loss.")
    drop_path: searchable("float", minimum=0, maximum=1) = Field(  # type: ignore[valid-type]
        0.0,
        description="Stochastic depth: the last block's drop rate, linearly less for earlier ones (timm's "
        "drop_path); needs connections to keep. Searchable.",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto or bf16: bf16 autocast on CUDA; fp32: no autocast. The CPU always trains in fp32."
    )


_METRIC_TEXT = "; ".join(f"{k}: {v}" for k, v in METRIC_MEANINGS.items())


class ObjectiveSpec(_Section):
    """One entry of `objectives`: a metric and its direction. Short form: `- val_accuracy: maximize`."""

    metric: Literal[METRICS] = Field(description=f"The metric to rank by. {_METRIC_TEXT}.")  # type: ignore[valid-type]
    direction: Literal["maximize", "minimize"] = Field(description="maximize or minimize.")

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        """``{val_accuracy: maximize}`` is ``{metric: val_accuracy, direction: maximize}``."""
        if isinstance(data, str):
            raise ValueError(f"an objective needs a direction: write '- {data}: maximize' (or minimize)")
        if isinstance(data, dict) and not {"metric", "direction"} & set(data):
            if len(data) > 1:
                raise ValueError("one objective per list item: write each '- metric: direction' on its own line")
            ((key, value),) = data.items() or [(None, None)]
            if isinstance(value, str):
                return {"metric": key, "direction": value}
        return data


class MutationSpec(_Section):
    """`search.evolution.mutation`: relative weights of what one mutation changes."""

    connection: float = Field(0.7, ge=0, description="A connection: add, remove, move, or change its kind or span.")
    network: float = Field(0.15, ge=0, description="A searchable network value (a depth, a width, a block type...).")
    train: float = Field(0.15, ge=0, description="A searchable training value (lr, epochs...).")


class EvolutionSpec(_Section):
    """`search.evolution`: regularized evolution (Real et al. 2019), for `sampler: evolution`."""

    population: int = Field(10, ge=2, le=10_000, description="The population: the last `population` finished trials.")
    sample_size: int = Field(
        3, ge=1, le=10_000, description="A parent is the best of `sample_size` members drawn at random."
    )
    mutation: MutationSpec = Field(
        MutationSpec(), description="What a mutation changes; see search.evolution.mutation."
    )


class ScreenSpec(_Section):
    """`search.screen`: draw `pool` candidates, score them without training, train the best `keep`."""

    score: Literal["grad_norm", "snip", "synflow", "jacob_cov", "naswot", "grad_flow", "params", "flops"] = Field(
        description="The training-free score: grad_norm, snip, synflow, jacob_cov, naswot, grad_flow (gradient "
        "reaching the first block), params or flops (a cost proxy)."
    )
    pool: int = Field(ge=2, le=100_000, description="Candidates drawn and scored per screening round.")
    keep: int = Field(1, ge=1, le=100_000, description="The best-scored candidates trained; smaller than pool.")

    @model_validator(mode="after")
    def _keep_below_pool(self) -> ScreenSpec:
        if self.keep >= self.pool:
            raise ValueError(f"keep ({self.keep}) must be smaller than pool ({self.pool})")
        return self


class OneShotSettings(_Section):
    """`search.oneshot`: the one-shot strategy, one supernet instead of many trials."""

    epochs: int = Field(
        10,
        ge=1,
        description="Supernet training epochs: the strategy's budget. The derived network then trains train.epochs.",
    )
    mode: Literal["alternating", "single"] = Field(
        "alternating",
        description="alternating: weights on the training split, architecture weights on the validation split "
        "(first-order DARTS, Liu et al. 2019); single: both on the training split, with sparsity.",
    )
    arch_lr: float = Field(
        0.01, gt=0, description="Learning rate of Adam on the architecture weights (betas 0.5, 0.999, as DARTS)."
    )
    arch_weight_decay: float = Field(0.001, ge=0, description="Weight decay of the architecture weights.")
    warmup: int = Field(2, ge=0, description="Epochs of weight training before the architecture weights move.")
    temperature: tuple[PositiveFloat, PositiveFloat] = Field(
        (1.0, 0.3),
        description="[start, end]: softmax temperature of the architecture weights, annealed geometrically.",
    )
    sparsity: float = Field(
        0.02,
        ge=0,
        description="Penalty per expected connection (summed weight of every kind but none) above count's upper bound.",
    )
    select: Literal["perturbation", "magnitude"] = Field(
        "perturbation",
        description="How the derivation ranks connections: perturbation (Wang et al. 2021) or magnitude.",
    )


class SearchSettings(_Section):
    """`search`: how candidates are proposed, pruned and confirmed."""

    trials: int = Field(
        20, ge=1, le=1_000_000, description="Trials to finish (baselines included); --trials overrides it."
    )
    sampler: Literal["auto", "tpe", "nsga2", "random", "grid", "qmc", "evolution"] = Field(
        "auto",
        description="auto (TPE for one objective, NSGA-II for several), tpe, nsga2, random, grid (every "
        "combination of finite choices), qmc (quasi-random Sobol), evolution (regularized evolution; see "
        "search.evolution).",
    )
    evolution: EvolutionSpec = Field(EvolutionSpec(), description="Options of sampler: evolution.")
    baselines: bool = Field(
        True,
        description="Train the reference points first: the backbone with no connections, and with a span-1 "
        "identity around every block (classic ResNet).",
    )
    confirm: int = Field(
        0,
        ge=0,
        le=10_000,
        description="After the search, retrain the best `confirm` trials with --seeds more seeds each.",
    )
    pruner: Literal["none", "median", "hyperband"] = Field(
        "none",
        description="Stop poor trials early, epochs being the budget: none, median (Optuna's MedianPruner) or "
        "hyperband (HyperbandPruner). Single-objective studies only.",
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the sampler, the data split and the training.")
    trial_timeout: float | None = Field(
        None, gt=0, le=10**7, description="Seconds one trial may train before it is ended as pruned; null = no limit."
    )
    screen: ScreenSpec | None = Field(
        None, description="Training-free screening (see search.screen); null = train every proposed candidate."
    )
    diagnostics: bool = Field(
        True,
        description="Record each trial's training-free scores and gradient-flow profile, of the network as it "
        "starts training (a few forward and backward passes on one batch; the report plots them). false: not "
        "recorded, for trials so short that this matters; screening scores its pool either way. Not part of "
        "the spec hash.",
    )
    strategy: Literal["sample", "oneshot"] = Field(
        "sample",
        description="sample: every trial samples and trains an architecture; oneshot: one supernet, then its "
        "derivation (see search.oneshot).",
    )
    oneshot: OneShotSettings = Field(OneShotSettings(), description="Options of strategy: oneshot.")


class SpecModel(_Section):
    """A resnas search space."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        max_length=100,
        description="The study's name: letters, digits, _ . - (at most 100).",
    )
    description: str = Field("", description="Free text; not part of the spec hash.")
    data: DataSpec = Field(DataSpec(), description="The dataset; see data.")
    network: NetworkSpec = Field(description="The backbone; see network.")
    residual: ResidualSpec = Field(ResidualSpec(), description="Where connections may go; see residual.")
    train: TrainSpec = Field(TrainSpec(), description="Training of each candidate; see train.")
    objectives: list[ObjectiveSpec] = Field(
        [ObjectiveSpec(metric="val_accuracy", direction="maximize")],
        min_length=1,
        description="What to optimise: one entry, or several for a multi-objective (Pareto) search.",
    )
    search: SearchSettings = Field(SearchSettings(), description="The search itself; see search.")


def json_schema() -> dict[str, Any]:
    schema = SpecModel.model_json_schema()
    # An objective is also written {val_accuracy: maximize}, which the validator turns into the long form.
    long_form = schema["$defs"].pop("ObjectiveSpec")
    short_form = {
        "type": "object",
        "description": "Short form: {metric: direction}, as {val_accuracy: maximize}.",
        "propertyNames": {"enum": list(METRICS)},
        "additionalProperties": long_form["properties"]["direction"],
        "minProperties": 1,
        "maxProperties": 1,
    }
    schema["$defs"]["ObjectiveSpec"] = {"description": long_form["description"], "anyOf": [long_form, short_form]}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "resnas search space"
    return schema
