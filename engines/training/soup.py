"""Averaging the weights of lifter runs that started from the same weights (a "soup").

    python -m engines.training.soup runs/a/denoiser.pt runs/b/denoiser.pt --out runs/soup

Fine-tunes of one network from the same starting weights stay in one basin of the loss, so
the mean of their weights is itself a good network, and usually a better one than each:
their step-to-step noise differs and averages out (Wortsman et al., "Model soups", 2022).
On this CPU it puts a second core to use on the same job: two one-thread runs with different
seeds, averaged. Runs of different networks, or not started from the same weights, are
refused: their mean is not meaningful.

Writes ``denoiser.pt`` (float16, as :func:`engines.training.train.export` does),
``denoiser.json`` (the first run's description, the runs averaged and their hashes) and,
with the export extra, ``denoiser.onnx``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from engines.diffusion.weights import load_denoiser

log = logging.getLogger("smplstream.soup")


def average_weights(paths: list[Path]) -> tuple[torch.nn.Module, list[dict]]:
    """The network of ``paths`` (denoiser weights with their JSON beside them) with the mean
    of their weights, and their descriptions. Raises ValueError if they are not soup-able."""
    if len(paths) < 2:
        raise ValueError("give at least two weight files to average")
    infos = [json.loads(Path(p).with_suffix(".json").read_text()) for p in paths]
    configs = {json.dumps(i["config"], sort_keys=True) for i in infos}
    if len(configs) > 1:
        raise ValueError("the runs have different networks; only runs of one network can be averaged")
    starts = {(i.get("init") or {}).get("sha256") for i in infos}
    if len(starts) > 1 or None in starts:
        raise ValueError("the runs did not all start from the same weights (their JSON's init.sha256); "
                         "averaging runs from different starts gives a broken network")
    models = [load_denoiser(p) for p in paths]
    mean = models[0]
    states = [m.state_dict() for m in models]
    mean.load_state_dict({k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype)
                          if v.is_floating_point() else v for k, v in states[0].items()})
    return mean, infos


def main(argv: list[str] | None = None) -> int:
    from engines.training.train import export, file_sha256

    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="average-lifter", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", nargs="+", help="denoiser.pt files of runs from the same starting weights")
    p.add_argument("--out", required=True, help="directory for the averaged weights")
    p.add_argument("--no-onnx", action="store_true", help="write the torch weights only")
    args = p.parse_args(argv)
    paths = [Path(w) for w in args.weights]
    try:
        model, infos = average_weights(paths)
    except (ValueError, OSError) as exc:
        raise SystemExit(f"average-lifter: {exc}") from None
    meta = {k: v for k, v in infos[0].items()
            if k not in ("final", "weights_sha256") and not k.startswith("spread_temperature")}
    meta["soup_of"] = [{"weights": str(p), "sha256": file_sha256(p), "seed": i.get("seed"),
                        "final": i.get("final")} for p, i in zip(paths, infos)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    export(model, meta, [], out, onnx=not args.no_onnx)
    log.info("averaged %d runs into %s", len(paths), out / "denoiser.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
