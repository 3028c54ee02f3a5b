"""Design configuration: one YAML file describes the model, its numerics and the hardware.

``load_config(path_or_preset)`` returns a validated :class:`DesignConfig`. Every error is raised as a
:class:`ConfigError` whose message is one line naming the field, the offending value and what is
allowed. Cross-field rules (heads divide dim, K ≤ N, formats wide enough, ...) live here so that the
generators, simulators and the driver can trust a loaded config without re-checking it.
"""

from __future__ import annotations

import hashlib
import json
import keyword
import math
import operator
import re
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import yaml
from pydantic import (
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from m3vit import package_dir
from m3vit.errors import ToolkitError

PRESET_DIR = package_dir("m3vit.configs")
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
"""Names that reach generated C++/Tcl (design and task names): lower-case C identifiers, ≤ 32 chars."""
RESERVED_NAMES = frozenset(keyword.kwlist) | {
    # C/C++ keywords and common macros that a generated identifier could collide with
    "auto", "bool", "break", "case", "char", "const", "continue", "default", "delete", "do", "double",
    "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long", "new", "private", "public",
    "register", "return", "short", "signed", "sizeof", "static", "struct", "switch", "template", "this",
    "typedef", "union", "unsigned", "void", "volatile", "while", "main",
    # torch.nn.ModuleDict / nn.Module attributes (task heads are a ModuleDict keyed by task name)
    "keys", "values", "items", "update", "clear", "pop", "get", "forward", "train", "eval", "to", "cpu",
    "cuda", "type", "half", "apply", "modules", "children", "parameters", "buffers", "state_dict",
}
"""Identifier-shaped names that would still collide in generated C++ or in the PyTorch module tree."""


class ConfigError(ToolkitError, ValueError):
    """An invalid configuration; ``str(err)`` is a single line naming the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Int = Annotated[int, Strict()]
"""An integer field: ``true``, ``4.0`` or ``"4"`` are refused, not coerced (bounds are set per field)."""
Real = Annotated[float, Strict(), AllowInfNan(False)]
"""A finite real field: an int is taken exactly, a bool or a string is refused (bounds are set per field)."""


def _int_choice(value: object) -> object:
    """Refuse non-integers before a ``Literal`` of ints (which would take ``128.0`` for 128)."""
    if type(value) is not int:
        raise ValueError("must be an integer")
    return value


# --------------------------------------------------------------------------------------------- boards
class BoardSpec(_Strict):
    """An FPGA board: device, Vivado names and the resources the design may use."""

    part: str
    board_part: str
    lut: int
    ff: int
    dsp: int
    bram36: int
    uram: int
    max_clock_mhz: float
    ddr_gbytes_per_s: float = Field(description="Sustained PL→DDR bandwidth over the HP ports, GB/s")
    hp_ports: int = 4


BOARDS: dict[str, BoardSpec] = {
    "zcu104": BoardSpec(
        part="xczu7ev-ffvc1156-2-e", board_part="xilinx.com:zcu104:part0:1.1",
        lut=230_400, ff=460_800, dsp=1_728, bram36=312, uram=96, max_clock_mhz=400.0,
        ddr_gbytes_per_s=19.2,
    ),
    "zcu102": BoardSpec(
        part="xczu9eg-ffvb1156-2-e", board_part="xilinx.com:zcu102:part0:3.4",
        lut=274_080, ff=548_160, dsp=2_520, bram36=912, uram=0, max_clock_mhz=400.0,
        ddr_gbytes_per_s=19.2,
    ),
    "kv260": BoardSpec(
        part="xck26-sfvc784-2LV-c", board_part="xilinx.com:kv260_som:part0:1.4",
        lut=117_120, ff=234_240, dsp=1_248, bram36=144, uram=64, max_clock_mhz=350.0,
        ddr_gbytes_per_s=10.0, hp_ports=4,
    ),
}


# ------------------------------------------------------------------------------------------- numerics
class FixedFormat(_Strict):
    """Signed two's-complement fixed point: an integer ``q`` of ``bits`` bits stands for q·2^-frac."""

    bits: Annotated[Int, Field(ge=2, le=32)]
    frac: Annotated[Int, Field(ge=-16, le=40)]

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1))

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1

    @property
    def lsb(self) -> float:
        return 2.0 ** -self.frac

    def __str__(self) -> str:
        return f"Q{self.bits}.{self.frac}"


def _fmt(bits: int, frac: int) -> FixedFormat:
    return FixedFormat(bits=bits, frac=frac)


class NumericsConfig(_Strict):
    """Fixed-point format of each tensor class; see docs/numerics.md for what each one holds."""

    input: FixedFormat = _fmt(16, 12)  # normalised image pixels
    act: FixedFormat = _fmt(16, 8)  # residual stream, block outputs, expert outputs
    norm: FixedFormat = _fmt(16, 11)  # LayerNorm outputs (inputs of every matmul but proj/fc2)
    qkv: FixedFormat = _fmt(16, 10)  # q, k, v and the attention context
    hidden: FixedFormat = _fmt(16, 10)  # MLP / expert hidden layer, before and after GELU
    logit: FixedFormat = _fmt(16, 10)  # router logits
    weight: FixedFormat = _fmt(8, 8)  # every matmul weight
    ln_param: FixedFormat = _fmt(16, 12)  # LayerNorm gamma and beta
    bias_bits: Annotated[Int, Field(ge=8, le=48)] = 32  # biases are stored at accumulator scale
    acc_bits: Annotated[Int, Field(ge=16, le=52)] = 48  # matmul accumulator (exact, never saturates)
    exp_frac_bits: Annotated[Int, Field(ge=4, le=12)] = 8  # base-2 exponent input frac bits = log2(table)
    ln_hat_frac: Annotated[Int, Field(ge=6, le=15)] = 12  # frac bits of the normalised value x̂
    gelu_range_log2: Annotated[Int, Field(ge=1, le=5)] = 3  # GELU table covers [-2^r, 2^r) in hidden units
    gelu_segments_log2: Annotated[Int, Field(ge=4, le=12)] = 8  # 2^s linear segments over that range

    # Fixed by the spec (docs/numerics.md §2), not configurable.
    PROB_FRAC: ClassVar[int] = 15  # exp2 outputs, softmax probabilities, router gate weights (unsigned)
    SCALE_FRAC: ClassVar[int] = 15  # constant multipliers (log2 e / sqrt(d), log2 e)
    RECIP_FRAC: ClassVar[int] = 15  # normalised reciprocals: R = round(2^(L+15) / v) lies in (2^15, 2^16]


# ------------------------------------------------------------------------------------------- hardware
class HardwareConfig(_Strict):
    """Board, clock and the parallelism knobs of the generated kernels."""

    board: Literal["zcu104", "zcu102", "kv260"] = "zcu104"
    clock_mhz: Annotated[Real, Field(ge=10, le=1000)] = 300.0  # also ≤ the board's max_clock_mhz
    mac_in: Annotated[Int, Field(ge=1, le=256)] = 32  # MAC engine: input-channel parallelism
    mac_out: Annotated[Int, Field(ge=1, le=256)] = 32  # MAC engine: output-channel parallelism
    token_tile: Annotated[Int, Field(ge=1, le=4096)] = 64  # tokens per on-chip activation tile
    attn_key_block: Annotated[Int, Field(ge=1, le=4096)] = 64  # keys per streaming-softmax block
    axi_data_bits: Annotated[Literal[64, 128, 256, 512], BeforeValidator(_int_choice)] = 128

    @property
    def board_spec(self) -> BoardSpec:
        return BOARDS[self.board]


# ---------------------------------------------------------------------------------------------- model
class TaskSpec(_Strict):
    """One task: a name (a C identifier) and the channel count of its head output."""

    name: str
    channels: Annotated[Int, Field(ge=1, le=1024)]

    @field_validator("name")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not IDENTIFIER.match(v):
            raise ValueError(f"task name {v!r} must match {IDENTIFIER.pattern} (it reaches generated C++)")
        if v in RESERVED_NAMES:
            raise ValueError(f"task name {v!r} is reserved (a C++/Python keyword or module attribute); rename it")
        return v


class ModelConfig(_Strict):
    """The M³ViT backbone and its task heads."""

    image_size: tuple[Annotated[Int, Field(ge=1, le=8192)], Annotated[Int, Field(ge=1, le=8192)]]  # (H, W)
    in_channels: Annotated[Int, Field(ge=1, le=16)] = 3
    patch_size: Annotated[Int, Field(ge=1, le=64)] = 16
    dim: Annotated[Int, Field(ge=4, le=4096)] = 384
    depth: Annotated[Int, Field(ge=1, le=64)] = 12
    num_heads: Annotated[Int, Field(ge=1, le=64)] = 12
    mlp_ratio: Annotated[Real, Field(ge=0.125, le=16)] = 4.0
    moe_blocks: list[Annotated[Int, Field(ge=0, le=63)]] | None = None  # default: the odd blocks 1, 3, 5, ...
    num_experts: Annotated[Int, Field(ge=1, le=256)] = 16
    top_k: Annotated[Int, Field(ge=1, le=16)] = 4
    expert_hidden: Annotated[Int, Field(ge=1, le=16384)] = 384
    tasks: list[TaskSpec]
    gate: Literal["multi_gate", "task_conditioned"] = "multi_gate"
    task_embed_dim: Annotated[Int, Field(ge=1, le=1024)] = 64
    ln_eps: Annotated[Real, Field(ge=1e-12, le=0.1)] = 1e-6

    @model_validator(mode="after")
    def _cross_checks(self) -> ModelConfig:
        h, w = self.image_size
        if self.dim % self.num_heads:
            raise ValueError(f"num_heads = {self.num_heads} must divide dim = {self.dim}")
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"image_size = {list(self.image_size)} must be divisible by patch_size = {self.patch_size}"
            )
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k = {self.top_k} must be ≤ num_experts = {self.num_experts}")
        if not self.tasks:
            raise ValueError("tasks must list at least one task")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"tasks has duplicate names {names}")
        if self.moe_blocks is not None:
            bad = [b for b in self.moe_blocks if not 0 <= b < self.depth]
            if bad or len(set(self.moe_blocks)) != len(self.moe_blocks):
                raise ValueError(
                    f"moe_blocks = {self.moe_blocks} must be distinct block indices in [0, {self.depth})"
                )
        if float(self.dim * self.mlp_ratio) != int(self.dim * self.mlp_ratio):
            raise ValueError(f"mlp_ratio = {self.mlp_ratio} must make dim·mlp_ratio an integer")
        return self

    # Derived sizes -------------------------------------------------------------------------------
    @property
    def grid(self) -> tuple[int, int]:
        return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size

    @property
    def num_patches(self) -> int:
        gh, gw = self.grid
        return gh * gw

    @property
    def num_tokens(self) -> int:
        return self.num_patches + 1  # cls token kept

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.dim * self.mlp_ratio)

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.patch_size**2

    @property
    def moe_block_set(self) -> frozenset[int]:
        if self.moe_blocks is None:
            return frozenset(range(1, self.depth, 2))
        return frozenset(self.moe_blocks)

    def is_moe(self, block: int) -> bool:
        return block in self.moe_block_set

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def task_index(self, task: str | int) -> int:
        """Index of ``task``: a name, an integer index (numpy integers too) or its decimal string (``"1"``, as
        typed on a command line; names cannot start with a digit). ValueError listing the tasks if unknown."""
        names = self.task_names
        if isinstance(task, str) and task.isascii() and task.isdecimal():
            task = int(task)
        elif not isinstance(task, (str, bool)) and hasattr(task, "__index__"):
            task = operator.index(task)  # numpy / 0-d tensor integers
        if isinstance(task, int) and not isinstance(task, bool) and 0 <= task < len(names):
            return task
        if isinstance(task, str) and task in names:
            return names.index(task)
        raise ValueError(f"unknown task {task!r}; tasks are {names} (or indices 0..{len(names) - 1})")


# ---------------------------------------------------------------------------------------------- design
class DesignConfig(_Strict):
    """A whole design: name, model, numerics and hardware."""

    name: str
    model: ModelConfig
    numerics: NumericsConfig = NumericsConfig()
    hardware: HardwareConfig = HardwareConfig()

    @field_validator("name")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not IDENTIFIER.match(v):
            raise ValueError(f"design name {v!r} must match {IDENTIFIER.pattern} (it reaches generated C++/Tcl)")
        if v in RESERVED_NAMES:
            raise ValueError(f"design name {v!r} is reserved (a C++/Python keyword); rename it")
        return v

    @model_validator(mode="after")
    def _numerics_fit(self) -> DesignConfig:
        for problem in numerics_problems(self):
            raise ValueError(problem)
        hw, board = self.hardware, self.hardware.board_spec
        if hw.clock_mhz > board.max_clock_mhz:
            raise ValueError(
                f"hardware.clock_mhz = {hw.clock_mhz} exceeds {hw.board}'s limit of {board.max_clock_mhz} MHz"
            )
        return self

    def config_hash(self) -> str:
        """SHA-256 of the canonical JSON of the design (what a bitstream and a weights file must share)."""
        canon = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()


def matmul_shapes(cfg: DesignConfig) -> dict[str, tuple[str, str, int]]:
    """Every matmul of the datapath: name → (input class, output class, reduction length K)."""
    m = cfg.model
    return {
        "patch_embed": ("input", "act", m.patch_dim),
        "qkv": ("norm", "qkv", m.dim),
        "proj": ("qkv", "act", m.dim),
        "fc1": ("norm", "hidden", m.dim),
        "fc2": ("hidden", "act", m.mlp_hidden),
        "expert_fc1": ("norm", "hidden", m.dim),
        "expert_fc2": ("hidden", "act", m.expert_hidden),
        "router": ("norm", "logit", m.dim),
    }


def numerics_problems(cfg: DesignConfig) -> list[str]:
    """Reasons the numeric formats cannot implement this model exactly (empty when they can)."""
    n, m = cfg.numerics, cfg.model
    problems: list[str] = []
    w = n.weight
    for name, (src, dst, k) in matmul_shapes(cfg).items():
        fin, fout = getattr(n, src), getattr(n, dst)
        shift = fin.frac + w.frac - fout.frac
        if shift < 0:
            problems.append(
                f"numerics: {name} requantises {src} ({fin}) × weight ({w}) to {dst} ({fout}) with a left "
                f"shift of {-shift}; {dst}.frac must be ≤ {fin.frac + w.frac}"
            )
        # worst case |Σ a·w + bias| must fit the accumulator: K products plus a bias of bias_bits
        products = (fin.bits - 1) + (w.bits - 1) + math.ceil(math.log2(k))
        need = max(products, n.bias_bits - 1) + 2
        if need > n.acc_bits:
            problems.append(
                f"numerics.acc_bits = {n.acc_bits} is too narrow for {name} (K = {k}): needs ≥ {need}"
            )
    # attention scores q·k and context Σ p·v are accumulated exactly as well
    qb = n.qkv.bits - 1
    for what, need in (
        ("attention scores", 2 * qb + math.ceil(math.log2(m.head_dim + 1)) + 1),
        ("attention context", n.PROB_FRAC + qb + math.ceil(math.log2(m.num_tokens + 1)) + 1),
    ):
        if need > n.acc_bits:
            problems.append(f"numerics.acc_bits = {n.acc_bits} is too narrow for {what}: needs ≥ {need}")
    ln_v_bits = 2 * (n.act.bits - 1) + 2 * math.ceil(math.log2(m.dim)) + 1
    if ln_v_bits > 52:
        problems.append(
            f"numerics: LayerNorm over dim = {m.dim} with act ({n.act}) needs a {ln_v_bits}-bit variance "
            f"register; at most 52 bits are supported (narrow act or reduce dim)"
        )
    if n.ln_param.frac + n.ln_hat_frac < n.norm.frac:
        problems.append(
            f"numerics: LayerNorm output norm.frac = {n.norm.frac} must be ≤ ln_param.frac + ln_hat_frac "
            f"= {n.ln_param.frac + n.ln_hat_frac}"
        )
    if n.gelu_segments_log2 > n.gelu_range_log2 + 1 + n.hidden.frac:
        problems.append(
            f"numerics.gelu_segments_log2 = {n.gelu_segments_log2} is finer than the hidden format's "
            f"lsb allows (≤ {n.gelu_range_log2 + 1 + n.hidden.frac})"
        )
    if n.hidden.bits - 1 - n.hidden.frac < n.gelu_range_log2:
        problems.append(
            f"numerics: hidden ({n.hidden}) cannot hold the GELU table range ±2^{n.gelu_range_log2}"
        )
    return problems


# ---------------------------------------------------------------------------------------------- loading
def _format_validation_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" = {value!r}"
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown field {loc!r}; check its spelling against docs/config.md"
    if first["type"] == "missing":
        return f"{source}: missing required field {loc!r}"
    if isinstance(value, dict):
        # cross-field errors carry their own field names and values in msg
        return f"{source}: {loc + ': ' if loc else ''}{msg}"
    return f"{source}: {loc}{shown}: {msg}"


def parse_config(data: dict, source: str = "<config>") -> DesignConfig:
    """Validate a config dictionary; raises ConfigError with a one-line message."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a config must be a YAML mapping, got {type(data).__name__}")
    try:
        return DesignConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, stricter: a key given twice in one mapping is an error (not "last one wins"),
    and ``1e-6`` is a number as in YAML 1.2 (YAML 1.1 wants ``1.0e-6`` and reads ``1e-6`` as a string)."""


def _construct_unique_mapping(loader: _ConfigLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    first_line: dict[object, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *anchor`` may be overridden by explicit keys
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            seen = first_line.get(key)
        except TypeError:  # an unhashable key: the base constructor reports it with its position
            break
        if seen is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first given on line {seen}); give each key once",
                key_node.start_mark,
            )
        first_line[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_ConfigLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def read_yaml(text: str, source: str) -> object:
    """Parse YAML text with :class:`_ConfigLoader`; errors become one-line ConfigErrors ``source:line:column``."""
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        what = " ".join(part for part in (err.context, err.problem) if part)
        raise ConfigError(f"{where}: not valid YAML: {what}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {str(err).splitlines()[0]}") from None


def resolve_config_path(path_or_preset: str | Path) -> Path:
    """A config file path, or the name of a preset in configs/ (``tiny`` → configs/tiny.yaml)."""
    p = Path(path_or_preset)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    preset = PRESET_DIR / f"{path_or_preset}.yaml"
    if preset.is_file():
        return preset
    if p.is_file():
        return p
    if p.is_dir():
        raise ConfigError(f"config {str(path_or_preset)!r} is a directory; give a YAML file or a preset name")
    names = sorted(q.stem for q in PRESET_DIR.glob("*.yaml"))
    raise ConfigError(f"config {str(path_or_preset)!r} is neither a file nor a preset; presets: {names}")


def load_config(path_or_preset: str | Path, **overrides: object) -> DesignConfig:
    """Load and validate a YAML config (a path or a preset name).

    ``overrides`` replace top-level sections' fields by dotted keys, e.g.
    ``load_config("tiny", **{"model.depth": 2})``; handy for reduced-size tests.
    """
    path = resolve_config_path(path_or_preset)
    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text file ({err.reason} at byte {err.start})") from None
    data = read_yaml(text, str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping, got {type(data).__name__}")
    for key, value in overrides.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return parse_config(data, str(path))


def with_overrides(cfg: DesignConfig, **overrides: object) -> DesignConfig:
    """A copy of ``cfg`` with dotted-key overrides, re-validated (e.g. ``{"model.image_size": [64, 64]}``)."""
    data = cfg.model_dump(mode="json")
    for key, value in overrides.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return parse_config(data, f"{cfg.name} (overridden)")
