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
    # the int8 denoiser spreads its samples differently, so it may carry its own.
    model.spread_temperature = {int(k): float(v) for k, v in info.get("spread_temperature", {}).items()}
    model.spread_temperature_int8 = {int(k): float(v) for k, v in info.get("spread_temperature_int8", {}).items()}
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise LifterWeightsError(f"{path}: does not fit the network in {config_path.name} "
                                 f"({str(exc).splitlines()[0]})") from None
    return model.eval()


def spread_temperature(model: torch.nn.Module, num_steps: int, precision: str | None = None) -> float:
    """The factor that widens the samples' spread at ``num_steps`` K into the error expected on
    held-out frames: the one fitted for ``precision`` (``int8``) where the weights carry it,
    else the float32 one, else 1."""
    if precision == "int8" and num_steps in getattr(model, "spread_temperature_int8", {}):
        return model.spread_temperature_int8[num_steps]
    return getattr(model, "spread_temperature", {}).get(num_steps, 1.0)
