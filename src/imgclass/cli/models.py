"""``imgclass models``: the registry, what is installed, sizes and accuracy."""
from __future__ import annotations

import json

from ..models import DEFAULT_NETWORK, find_weights, how_to_get, list_specs


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list the networks imgclass knows and whether their weights are installed",
                       description="List the model registry. Any timm or torchvision architecture also works as "
                                   "timm:NAME or torchvision:NAME when its weights are on this machine.")
    p.add_argument("--json", action="store_true", help="one JSON object per network")
    p.set_defaults(func=run)


def run(args) -> int:
    rows = []
    for spec in list_specs():
        weights = find_weights(spec)
        rows.append({"name": spec.name, "installed": weights is not None, "input_size": spec.preprocess.size,
                     "imagenet_top1": spec.top1, "params_millions": spec.params, "default": spec.name == DEFAULT_NETWORK,
                     "weights": str(weights) if weights else None, "how_to_get": None if weights else how_to_get(spec)})
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"{'network':<20}{'installed':<11}{'input':<7}{'params':<9}{'top-1':<7}")
    for r in rows:
        top1 = f"{r['imagenet_top1']:.1f}" if r["imagenet_top1"] else "-"
        size = f"{r['params_millions']:.1f}M" if r["params_millions"] else "-"
        mark = "  (default)" if r["default"] else ""
        print(f"{r['name']:<20}{'yes' if r['installed'] else 'no':<11}{r['input_size']:<7}{size:<9}{top1:<7}{mark}")
    missing = [r for r in rows if not r["installed"]]
    if missing:
        print(f"\n{len(missing)} networks have no weights here; imgclass never downloads. For each: "
              f"`imgclass models --json` says how to get it (e.g. {missing[0]['name']}: {missing[0]['how_to_get']}).")
    return 0
