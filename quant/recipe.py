"""Quantization recipes: which precision every weight of a model gets, as one frozen, validated object.

A TensorRule is one format (bits, block size, zero points or not). A Recipe maps each linear's role and layer
to a rule (quant/plan.py names the roles), picks the rule of the tied embedding / vocabulary projection, the
way block scales are chosen (`method`), the KV-cache dtype and MatMulNBits' accuracy level. QuantSettings is
what `quantize_model_folder` takes: a recipe plus how to run it. Recipes are named;
`clova-edge quantize --recipe NAME` picks one, `--bits 4` / `--bits 8` the default of that width. Which
recipe is the default, and why, is recorded next to RECIPES with the study that measured it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

from clova_edge.runtime.errors import QuantizeError

from .rotate import WHICH as ROTATIONS

METHODS = ("rtn", "search", "act", "gptq")   # see quant/primitives.py (rtn, search), act = search weighted by
#                                             E[x^2] of the layer's input, gptq = quant/gptq.py
KV_DTYPES = ("float32", "int8")               # the manifest's names (variants.<name>.kv_dtype)
LAYER_SETS = ("all", "more_bits", "ends")


def _fail(msg: str) -> QuantizeError:
    return QuantizeError(msg)


@dataclass(frozen=True)
class TensorRule:
    """One weight format: MatMulNBits `bits` (4 or 8) in blocks of `block_size` along the input dimension,
    one scale per block stored in `scale_bits` (32, or 16: the node then runs in float16 between two Casts,
    which halves what small blocks cost on disk; see quant/rewrite.py)."""

    bits: int
    block_size: int
    symmetric: bool = True
    scale_bits: int = 32

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise _fail(f"bits must be 4 or 8, got {self.bits!r}")
        if self.scale_bits not in (16, 32):
            raise _fail(f"scale_bits must be 16 or 32, got {self.scale_bits!r}")
        b = self.block_size
        if not isinstance(b, int) or b < 16 or b & (b - 1):
            raise _fail(f"block size must be a power of 2 of at least 16 (32, 64, 128, ...), got {b!r}")

    def bits_per_weight(self) -> float:
        """Stored bits per weight: codes + a scale per block (+ a zero point of `bits` bits)."""
        return self.bits + (self.scale_bits + (0 if self.symmetric else self.bits)) / self.block_size

    def describe(self) -> str:
        return (f"{self.bits}-bit/{self.block_size}{'' if self.symmetric else ' asym'}"
                f"{' f16' if self.scale_bits == 16 else ''}")


def in_layer_set(which: str, layer: int, num_layers: int) -> bool:
    """'all'; 'ends': the first and last eighth of the layers; 'more_bits': those plus every third layer
    between them (the layer set llama.cpp's *_M recipes give more bits to: about half of a 24- or 30-layer
    model)."""
    if which == "all":
        return True
    eighth = num_layers // 8
    ends = layer < eighth or layer >= num_layers - eighth
    if which == "ends":
        return ends
    return ends or (layer - eighth) % 3 == 2


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    default: TensorRule                      # every linear no override matches
    lm_head: TensorRule | None               # the tied embedding + vocabulary projection; None keeps fp32
    overrides: tuple[tuple[str, str, TensorRule], ...] = ()   # (role, layer set, rule), first match wins
    method: str = "act"
    kv_cache: str = "int8"
    accuracy_level: int = 4                  # MatMulNBits: 4 = int8 activations where the CPU has a kernel
    rotate: str = "none"                     # quant/rotate.py: "mlp" (down_proj inputs) or "all" (+ residual)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise _fail(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.kv_cache not in KV_DTYPES:
            raise _fail(f"kv_cache must be one of {', '.join(KV_DTYPES)}, got {self.kv_cache!r}")
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            raise _fail(f"accuracy_level must be 0-4, got {self.accuracy_level!r}")
        if self.rotate not in ROTATIONS:
            raise _fail(f"rotate must be one of {', '.join(ROTATIONS)}, got {self.rotate!r}")
        if self.rotate != "none" and self.method == "act":
            raise _fail("a rotated recipe needs method gptq, search or rtn (act would weight the rotated "
                        "channels by the unrotated energies)")
        for role, layers, _rule in self.overrides:
            if layers not in LAYER_SETS:
                raise _fail(f"layer set must be one of {', '.join(LAYER_SETS)}, got {layers!r}")
            if role not in ("qkv", "v", "o", "gate_up", "down", "other"):
                raise _fail(f"override role {role!r} is not a linear role (qkv, v, o, gate_up, down, other)")

    @property
    def bits(self) -> int:
        return self.default.bits

    def fingerprint(self, calibration: str = "") -> str:
        """Short hash of every rule and setting (and of the calibration text, when given): a folder
        quantized under another fingerprint was made by another recipe, even if the name is the same."""
        # `rotate` came after the first fingerprints: at its default it is left out, so folders quantized
        # before it existed keep theirs
        text = repr(self).replace(", rotate='none'", "")
        return hashlib.sha256((text + "\0" + calibration).encode()).hexdigest()[:12]

    @property
    def variant(self) -> str:
        """The manifest variant this recipe writes: int4 or int8."""
        return f"int{self.default.bits}"

    def rule_for(self, role: str, layer: int | None, num_layers: int) -> TensorRule | None:
        """The rule of one linear (None: keep it fp32). Role "v" is the value rows of the fused qkv
        projection: without an override of its own it follows "qkv" (quant/rewrite.py splits the node only
        when they differ)."""
        if role == "lm_head":
            return self.lm_head
        for r, layers, rule in self.overrides:
            if r == role and (layers == "all"
                              or (layer is not None and in_layer_set(layers, layer, num_layers))):
                return rule
        return self.rule_for("qkv", layer, num_layers) if role == "v" else self.default


Q4_128 = TensorRule(4, 128)
Q8_128 = TensorRule(8, 128)
H32, H64, H128 = (TensorRule(4, b, symmetric=False, scale_bits=16) for b in (32, 64, 128))
# The INT4 default, chosen by benchmarks/studies/recipe_search.py on the off-grid SmolLM2 (export/offgrid.py),
# statistics from two thirds of the calibration windows, scored on the third they did not see (10,752 ids;
# perplexity delta / mean KL / top-1; llama.cpp Q4_K_M on the same ids: +7.20 % / 0.089 / 82.4 %, though on
# SmolLM2 its K-quants fall back to Q5_0 / Q8_0 / Q6_K, as 576 is no multiple of their 256-wide super-blocks):
#   previous default (GPTQ asym/128, down /64, fp32 scales) +9.43 % / 0.190 / 75.5 %;
#   GPTQ asym/64 f16 +8.17 % / 0.162;  asym/32 f16 +5.68 % / 0.118 / 79.8 %;
#   asym/32 f16 with a 4-bit vocabulary +9.78 % / 0.156 (the vocabulary stays 8-bit);
#   asym/32 f16 + values 8-bit +4.38 % / 0.095 / 82.5 % (but 395 MB at the full-size shape);
#   Y = asym/64 f16, gate_up /128, down and values /32: +7.37 % / 0.146; Y + values 8-bit in the end layers
#   +6.97 % / 0.142; Y + o_proj /32 (this one) +6.88 % / 0.142 / 78.1 %.
# The budget is llama.cpp Q4_K_M's file at the full-size HyperCLOVAX shape (368.1 MB): its vocabulary is
# 6-bit (Q6_K), ours 8-bit (MatMulNBits has no 6-bit), so the linears get ~4.4 bits per weight; float16
# scales (half of what a block's scale costs) buy blocks of 32 where the study found the error (down_proj,
# values, o_proj) and 64 elsewhere, with gate_up (44 % of the linear weights) at 128.
# The rotation study (same harness and ids, quant/rotate.py): rotating down_proj's inputs in blocks of 128
# (one MatMul per layer, ~3.5 % of a decode step in a paired run on the full-size shape) takes the rules above
# to +6.74 % / 0.122 / 80.0 %; rotating the residual stream too gives 0.111 KL but +8.41 % perplexity (and
# two fp32 d x d matrices on disk), so only the MLP is rotated. The same rotation takes GPTQ sym/128 (the
# fastest format) to +10.95 % / 0.171 / 76.6 % and asym/128 to +8.99 % / 0.153; unrotated asym/128 f16:
# +10.13 % / 0.204.
INT4 = Recipe("int4", "GPTQ 4-bit asymmetric blocks with float16 scales: /32 for down_proj, o_proj and the "
              "values, /64 for q and k, /128 for gate_up; down_proj inputs rotated (blocks of 128); 8-bit "
              "vocabulary projection; int8 KV cache",
              H64, TensorRule(8, 128, scale_bits=16), method="gptq", rotate="mlp",
              overrides=(("gate_up", "all", H128), ("down", "all", H32), ("v", "all", H32),
                         ("o", "all", H32)))
PREVIOUS_INT4 = Recipe("int4-gptq128", "the INT4 default before float16 scales: GPTQ 4-bit asymmetric blocks "
                       "of 128, down_proj /64, 8-bit vocabulary projection, int8 KV cache",
                       TensorRule(4, 128, symmetric=False), Q8_128, method="gptq",
                       overrides=(("down", "all", TensorRule(4, 64, symmetric=False)),))
RECIPES: dict[str, Recipe] = {r.name: r for r in (
    INT4, PREVIOUS_INT4,
    Recipe("int8", "8-bit blocks of 32, 8-bit vocabulary projection, fp32 KV cache: the faithful variant "
           "(block 128 triples its KL on SmolLM2)", TensorRule(8, 32), TensorRule(8, 32), kv_cache="float32"),
    Recipe("int4-fast", "GPTQ 4-bit symmetric blocks of 128, down_proj inputs rotated (blocks of 128), "
           "8-bit vocabulary projection, int8 KV cache: the fastest decode", Q4_128, Q8_128,
           method="gptq", rotate="mlp"),
    Recipe("int4-first", "the first release's INT4: 4-bit symmetric blocks of 128 with an "
           "activation-weighted scale search, 8-bit vocabulary projection, int8 KV cache", Q4_128, Q8_128),
)}
DEFAULT_RECIPE = {8: "int8", 4: "int4"}


@dataclass(frozen=True)
class QuantSettings:
    """A recipe and how to run it."""

    recipe: Recipe
    evaluate: bool = True                 # run the quality report (quant/report.py) and store it
    calibration_tokens: int | None = None  # None: all of quant/data/calib*.txt (see quant/calibrate.py)
    eval_tokens: int | None = None        # ids per evaluation text; None: quant/report.py TOKENS_PER_TEXT
    threads: int = 2
    extra: dict = field(default_factory=dict, compare=False)   # free-form notes recorded in the manifest

    def __post_init__(self) -> None:
        if not isinstance(self.recipe, Recipe):
            raise _fail(f"recipe must be a Recipe, got {type(self.recipe).__name__}")
        for name in ("calibration_tokens", "eval_tokens"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 16):
                raise _fail(f"{name} must be None or an integer of at least 16, got {v!r}")

    @classmethod
    def make(cls, *, bits: int | None = None, recipe: str | None = None, block_size: int | None = None,
             kv_cache: str | None = None, method: str | None = None, **run) -> "QuantSettings":
        """Settings from the command line's words: a named recipe (default: the default recipe of `bits`),
        optionally with the block size of every rule, the KV cache or the method changed."""
        if recipe is None:
            if bits not in DEFAULT_RECIPE:
                raise _fail(f"bits must be 4 or 8, got {bits!r}")
            recipe = DEFAULT_RECIPE[bits]
        if recipe not in RECIPES:
            raise _fail(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
        r = RECIPES[recipe]
        if bits is not None and bits != r.bits:
            raise _fail(f"recipe {recipe} is {r.bits}-bit, but bits={bits} was asked; drop one of them")
        if kv_cache == "fp32":
            kv_cache = "float32"    # the command line's short name
        if block_size is not None:
            rb = lambda t: None if t is None else replace(t, block_size=block_size)  # noqa: E731
            r = replace(r, default=rb(r.default), lm_head=rb(r.lm_head),
                        overrides=tuple((a, b, rb(t)) for a, b, t in r.overrides),
                        name=f"{r.name}/b{block_size}")
        if kv_cache is not None:
            r = replace(r, kv_cache=kv_cache)
        if method is not None:
            r = replace(r, method=method)
        return cls(recipe=r, **run)
