"""Quantization recipes: which precision every weight of a model gets, as one frozen, validated object.

A TensorRule is one format (bits, block size, zero points or not). A Recipe maps each linear's role and layer
to a rule (quant/plan.py names the roles), picks the rule of the tied embedding / vocabulary projection, the
way block scales are chosen (`method`), the KV-cache dtype and MatMulNBits' accuracy level. QuantSettings is
what `quantize_model_folder` takes: a recipe plus how to run it. Recipes are named;
`clova-edge quantize --recipe NAME` picks one, `--bits 4` / `--bits 8` the default of that width. Which
recipe is the default, and why, is recorded next to RECIPES with the study that measured it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from clova_edge.runtime.errors import QuantizeError

METHODS = ("rtn", "search", "act", "gptq")   # see quant/primitives.py (rtn, search), act = search weighted by
#                                             E[x^2] of the layer's input, gptq = quant/gptq.py
KV_DTYPES = ("float32", "int8")               # the manifest's names (variants.<name>.kv_dtype)
LAYER_SETS = ("all", "more_bits", "ends")


def _fail(msg: str) -> QuantizeError:
    return QuantizeError(msg)


@dataclass(frozen=True)
class TensorRule:
    """One weight format: MatMulNBits `bits` (4 or 8) in blocks of `block_size` along the input dimension."""

    bits: int
    block_size: int
    symmetric: bool = True

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise _fail(f"bits must be 4 or 8, got {self.bits!r}")
        b = self.block_size
        if not isinstance(b, int) or b < 16 or b & (b - 1):
            raise _fail(f"block size must be a power of 2 of at least 16 (32, 64, 128, ...), got {b!r}")

    def bits_per_weight(self) -> float:
        """Stored bits per weight: codes + an fp32 scale per block (+ a zero point of `bits` bits)."""
        return self.bits + (32 + (0 if self.symmetric else self.bits)) / self.block_size

    def describe(self) -> str:
        return f"{self.bits}-bit/{self.block_size}{'' if self.symmetric else ' asym'}"


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

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise _fail(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.kv_cache not in KV_DTYPES:
            raise _fail(f"kv_cache must be one of {', '.join(KV_DTYPES)}, got {self.kv_cache!r}")
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            raise _fail(f"accuracy_level must be 0-4, got {self.accuracy_level!r}")
        for role, layers, _rule in self.overrides:
            if layers not in LAYER_SETS:
                raise _fail(f"layer set must be one of {', '.join(LAYER_SETS)}, got {layers!r}")
            if role not in ("qkv", "v", "o", "gate_up", "down", "other"):
                raise _fail(f"override role {role!r} is not a linear role (qkv, v, o, gate_up, down, other)")

    @property
    def bits(self) -> int:
        return self.default.bits

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
# The INT4 default, chosen by benchmarks/studies/recipe_search.py on the calibration text of the off-grid
# SmolLM2 (export/offgrid.py; perplexity delta / mean KL / bits per linear weight):
# int4-fast +23.8 % / 0.397 / 4.25; asymmetric blocks +21.7 % / 0.390; blocks of 64 +16.9 % / 0.312 / 4.56;
# blocks of 32 +14.0 % / 0.255 / 5.0; GPTQ asym/128 +7.9 % / 0.205 / 4.28;
# GPTQ asym/64 +7.4 % / 0.172 / 4.56; GPTQ asym/128 with down_proj in 8 bits in half the layers
# +6.7 % / 0.151 / 4.74; GPTQ asym/128 with down_proj asym/64 +6.5 % / 0.195 / 4.35 (this one: the lowest
# perplexity delta at the size of llama.cpp's Q4_K_M). fp32 activations or an fp32 KV cache changed
# int4-fast by about one point: the loss is in the weights.
INT4 = Recipe("int4", "GPTQ 4-bit asymmetric blocks of 128, down_proj in blocks of 64, 8-bit vocabulary "
              "projection, int8 KV cache", TensorRule(4, 128, symmetric=False), Q8_128, method="gptq",
              overrides=(("down", "all", TensorRule(4, 64, symmetric=False)),))
RECIPES: dict[str, Recipe] = {r.name: r for r in (
    INT4,
    Recipe("int8", "8-bit blocks of 32, 8-bit vocabulary projection, fp32 KV cache: the faithful variant "
           "(block 128 triples its KL on SmolLM2)", TensorRule(8, 32), TensorRule(8, 32), kv_cache="float32"),
    Recipe("int4-fast", "4-bit symmetric blocks of 128, 8-bit vocabulary projection, int8 KV cache: "
           "the fastest decode, the least faithful", Q4_128, Q8_128),
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
