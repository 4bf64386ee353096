"""`ttrl zoo`: list the bundled models, and (re)train the tiny VLM's vision weights.

    ttrl zoo list
    ttrl zoo build tiny-vlm [--steps N] [--seed S] [--batch-size B] [--lr LR] [--out PATH]
    ttrl zoo build tiny-janus [--seed S] [--vq-steps N] [--und-steps N] [--gen-steps N] ... [--out PATH]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

# defaults of the shipped weights (see zoo/assets/tiny_vlm_card.json for the measured result)
BUILD_DEFAULTS = {"steps": 300, "seed": 0, "batch_size": 16, "lr": 1e-3}


def add_zoo_parser(subparsers) -> argparse.ArgumentParser:
    zoo = subparsers.add_parser("zoo", help="bundled models: list them, or train the tiny VLM's vision weights")
    sub = zoo.add_subparsers(dest="zoo_command", required=True)
    sub.add_parser("list", help="zoo names, their cache folders and whether they are built")
    build = sub.add_parser(
        "build", help="train the vision tower + projector of a zoo model (tiny-vlm) and write its weights and card",
        description="Train tiny-vlm's CLIP tower + projector on easy-vqa's train split (SmolLM2 frozen), evaluate "
                    "by greedy generation on a fixed easy-vqa test subset, and write the weights (safetensors) "
                    "and tiny_vlm_card.json beside them.")
    build.add_argument("name", choices=["tiny-vlm", "tiny-janus"], help="the model to build")
    build.add_argument("--steps", type=int, default=BUILD_DEFAULTS["steps"],
                       help=f"optimizer steps (default: {BUILD_DEFAULTS['steps']})")
    build.add_argument("--seed", type=int, default=BUILD_DEFAULTS["seed"],
                       help=f"initialisation and data-order seed (default: {BUILD_DEFAULTS['seed']})")
    build.add_argument("--batch-size", type=int, default=BUILD_DEFAULTS["batch_size"],
                       help=f"questions per step (default: {BUILD_DEFAULTS['batch_size']})")
    build.add_argument("--lr", type=float, default=BUILD_DEFAULTS["lr"],
                       help=f"AdamW learning rate (default: {BUILD_DEFAULTS['lr']})")
    build.add_argument("--eval-per-type", type=int, default=100,
                       help="test questions per type (colour, shape, yes/no) in the final evaluation (default: 100)")
    build.add_argument("--threads", type=int, default=None,
                       help="torch CPU threads (default: torch's choice); 1 is much faster when other jobs share the CPU")
    build.add_argument("--out", type=Path, default=None,
                       help="weights file to write (default: the package asset zoo/assets/tiny_vlm_vision.safetensors "
                            "or tiny_janus.safetensors)")
    _add_tiny_janus_options(build)
    return zoo


def _add_tiny_janus_options(build) -> None:
    """tiny-janus' architecture and budget flags, generated from their dataclasses (zoo/tiny_janus*.py)."""
    import dataclasses

    from .tiny_janus import Arch
    from .tiny_janus_train import Budget

    grp = build.add_argument_group("tiny-janus (architecture and budget; defaults are the shipped build's)")
    for cls in (Arch, Budget):
        for f in dataclasses.fields(cls):
            kw = {"nargs": "+", "type": int} if f.name == "vq_multipliers" else {"type": type(f.default)}
            grp.add_argument("--" + f.name.replace("_", "-"), dest=f"tj_{f.name}", default=f.default, metavar=f.name.upper(),
                             help=f"{f.metadata['help']} (default: {f.default})", **kw)
    grp.add_argument("--folder", type=Path, default=None, help="also keep the assembled Janus folder here")


def _list() -> int:
    from . import all_models, cache_root

    for name, model in all_models().items():
        try:
            path = cache_root() / "models" / model.folder()
            state = "built" if (path / "config.json").exists() else "builds on first use"
        except FileNotFoundError as e:
            path, state = None, f"unavailable: {e}"
        print(f"{name:14s} {state:20s} {path or ''}")
        if name == "tiny-vlm":
            from .tiny_vlm import ASSET, CARD_NAME

            card = ASSET.with_name(CARD_NAME)
            if card.exists():
                ev = json.loads(card.read_text())["evaluation"]
                acc = ", ".join(f"{k} {v:.0%}" for k, v in ev["accuracy"].items())
                print(f"{'':14s} easy-vqa test (greedy, n={ev['n']}): {acc}")
    return 0


def cmd_zoo(ns: argparse.Namespace) -> int:
    if ns.zoo_command == "list":
        return _list()
    if ns.zoo_command == "build" and ns.name == "tiny-janus":
        return _build_tiny_janus(ns)
    if ns.zoo_command == "build":
        from .tiny_vlm import ASSET
        from .tiny_vlm_train import train

        out = Path(ns.out) if ns.out is not None else ASSET
        card = train(steps=ns.steps, seed=ns.seed, batch_size=ns.batch_size, lr=ns.lr, out=out,
                     eval_per_type=ns.eval_per_type, threads=ns.threads)
        print(json.dumps({"weights": str(out), "train_seconds": card["training"]["train_seconds"],
                          "accuracy": card["evaluation"]["accuracy"]}, indent=2))
        return 0
    raise ValueError(f"unknown zoo command {ns.zoo_command!r}")


def _build_tiny_janus(ns: argparse.Namespace) -> int:
    import dataclasses

    from .tiny_janus import ASSET, Arch
    from .tiny_janus_train import Budget, train

    pick = {k[3:]: v for k, v in vars(ns).items() if k.startswith("tj_")}
    arch = Arch(**{f.name: (tuple(pick[f.name]) if f.name == "vq_multipliers" else pick[f.name])
                   for f in dataclasses.fields(Arch)})
    budget = Budget(**{f.name: pick[f.name] for f in dataclasses.fields(Budget)})
    out = Path(ns.out) if ns.out is not None else ASSET
    card = train(arch, budget, seed=ns.seed, out=out, folder=ns.folder, threads=ns.threads or 1)
    print(json.dumps({"weights": str(out), "train_seconds": card["training"]["train_seconds"],
                      "evaluation": card["evaluation"]}, indent=2))
    return 0
