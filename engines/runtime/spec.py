"""What a model looks like from outside (``ModelSpec``) and what actually ran (``EngineInfo``).

A spec names the inputs with their shapes, the batch dimension written as ``None`` (dynamic),
and the outputs in the order an engine returns them. Backends that build for a range of
shapes (TensorRT optimisation profiles, torch.export dynamic dims) read the range from
:meth:`ModelSpec.profile`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MIN_BATCH, OPT_BATCH, MAX_BATCH = 1, 8, 32


@dataclass(frozen=True)
class TensorSpec:
    """One input: ``shape`` with ``None`` for the (dynamic) batch dimension."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"

    def concrete(self, batch: int) -> tuple[int, ...]:
        return tuple(batch if d is None else int(d) for d in self.shape)


@dataclass(frozen=True)
class ModelSpec:
    """A model's interface: ``name``, ``inputs`` (ordered), ``outputs`` (ordered names),
    the precision it is meant to run in, and the batch range it is built for."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[str, ...]
    dtype: str = "float32"
    output_shapes: tuple[tuple[int | None, ...], ...] | None = None
    min_batch: int = MIN_BATCH
    opt_batch: int = OPT_BATCH
    max_batch: int = MAX_BATCH

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    def profile(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """(min, opt, max) shape per input, for engines built over a batch range."""
        return {t.name: (t.concrete(self.min_batch), t.concrete(self.opt_batch), t.concrete(self.max_batch))
                for t in self.inputs}


@dataclass
class EngineInfo:
    """What actually runs: backend, device, precision, thread count, and where a compiled
    engine came from (cache file; whether it was rebuilt)."""

    model: str
    backend: str
    device: str = "cpu"
    precision: str = "fp32"
    threads: int | None = None
    cache_file: str | None = None
    source: str | None = None
    details: dict = field(default_factory=dict)

    def describe(self) -> str:
        parts = [f"{self.model}: {self.backend} on {self.device}", self.precision]
        if self.threads is not None:
            parts.append(f"{self.threads} thread(s)")
        if self.cache_file:
            parts.append(f"cache {self.cache_file}")
        parts += [f"{k}={v}" for k, v in self.details.items()]
        return ", ".join(parts)
