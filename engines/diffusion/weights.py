"""The denoiser's weights: where the bundled ones live and how any are loaded.

``load_denoiser(path)`` reads a float16 or float32 state dict with ``weights_only=True`` (a
tampered file cannot run code) and the network config saved beside it (``NAME.json``),
and builds the network that config names (:func:`engines.diffusion.denoiser.build_denoiser`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from engines.diffusion.denoiser import DenoiserConfig, build_denoiser

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_WEIGHTS = ASSETS / "denoiser.pt"


class LifterWeightsError(ValueError):
    """The denoiser weights are missing or do not fit the network."""


def load_denoiser(weights: str | Path | None = None) -> torch.nn.Module:
    """Load denoiser weights (a state dict saved with ``torch.save``, float16 or float32; read
    with ``weights_only=True``, so a tampered file cannot run code) and the config beside
    them (``NAME.json``). The network computes in float32."""
    path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    config_path = path.with_suffix(".json")
    if not path.is_file():
        raise LifterWeightsError(f"{path}: no such weights file" + (
            " (the bundled lifter weights are missing from this installation)" if weights is None else ""))
    if not config_path.is_file():
        raise LifterWeightsError(f"{config_path}: missing (the network config saved beside the weights)")
    try:
        info = json.loads(config_path.read_text())
        config = DenoiserConfig(**info["config"])
    except (ValueError, KeyError, TypeError) as exc:
        raise LifterWeightsError(f"{config_path}: not a denoiser config ({exc})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds; all mean "not loadable"
        raise LifterWeightsError(f"{path}: cannot be loaded as plain weights ({str(exc).splitlines()[0]})") from None
    model = build_denoiser(config)
    # Per K (steps), how much wider than the samples' spread the error is on held-out frames;
    # the int8 denoiser spreads its samples differently, and a network that takes the world
    # landmarks lifts rows without them less surely, so each may carry its own table.
    model.spread_temperatures = {key: {int(k): float(v) for k, v in info[key].items()}
                                 for key in TEMPERATURE_KEYS if key in info}
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise LifterWeightsError(f"{path}: does not fit the network in {config_path.name} "
                                 f"({str(exc).splitlines()[0]})") from None
    return model.eval()


def temperature_key(precision: str | None = None, landmarks: bool = True) -> str:
    """The JSON key of the spread temperatures fitted for ``precision`` (``int8``, else
    float32) on rows lifted with (``landmarks``) or without the world landmarks: e.g.
    ``spread_temperature``, ``spread_temperature_int8_2d``."""
    return "spread_temperature" + ("_int8" if precision == "int8" else "") + ("" if landmarks else "_2d")


#: Every table of spread temperatures the weights' JSON may carry.
TEMPERATURE_KEYS = tuple(temperature_key(p, w) for p in ("fp32", "int8") for w in (True, False))


def spread_temperature(model: torch.nn.Module, num_steps: int, precision: str | None = None,
                       landmarks: bool = True) -> float:
    """The factor that widens the samples' spread at ``num_steps`` K into the error expected on
    held-out frames, for ``precision`` (``int8``, else float32) and rows lifted with
    (``landmarks``) or without the world landmarks. The table fitted for exactly that where
    the weights carry it; else the same precision's table with landmarks (what the weights
    carried before the tables per condition); else the float32 one; else 1. A network
    without the landmark condition has only the plain tables."""
    tables = getattr(model, "spread_temperatures", {})
    for key in dict.fromkeys((temperature_key(precision, landmarks), temperature_key(precision), temperature_key())):
        if num_steps in tables.get(key, {}):
            return tables[key][num_steps]
    return 1.0
