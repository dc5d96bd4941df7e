"""Model names → classes, and the LASER ablation variants of the paper's tables."""

from __future__ import annotations

from .baselines import Base, Din, Hstu, Transformer, Twin
from .laser import Laser
from .layers import ModelConfig, SeqModel
from .probes import Oracle

MODELS: dict[str, type[SeqModel]] = {
    "base": Base,
    "din": Din,
    "twin": Twin,
    "hstu": Hstu,
    "transformer": Transformer,
    "laser": Laser,
    "oracle": Oracle,  # diagnostic probe: handed the true count (synthetic data only)
}

# name → changes to the LASER configuration (the paper's ablation table)
ABLATIONS: dict[str, dict[str, object]] = {
    "laser": {},
    "laser-softmax": {"gate": "softmax"},
    "laser-no-recency": {"recency": False},
    "laser-no-fusion": {"fusion": False},
    "laser-no-ffn-ln": {"gsta_ffn": False, "gsta_norm": False},
    "laser-no-ln": {"gsta_norm": False},
}


def build_model(name: str, cfg: ModelConfig) -> SeqModel:
    """A model by name: one of MODELS, an ABLATIONS variant, or `laser-w<N>` / `laser-m<N>` /
    `laser-d<N>`; any of them with the suffix `+noitem` ignores item ids (category only)."""
    if name.endswith("+noitem"):
        return build_model(name[: -len("+noitem")], cfg.with_(use_item=False))
    if name in MODELS:
        return MODELS[name](cfg)
    if name in ABLATIONS:
        return Laser(cfg.with_(**ABLATIONS[name]))
    for prefix, field in (("laser-w", "segment"), ("laser-m", "gsta_layers"),
                          ("laser-d", "d_model")):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return Laser(cfg.with_(**{field: int(name[len(prefix):])}))
    known = sorted(MODELS) + sorted(set(ABLATIONS) - set(MODELS)) + ["laser-w<N>", "laser-m<N>",
                                                              "laser-d<N>"]
    raise ValueError(f"model: got {name!r}, expected one of {', '.join(known)}")
