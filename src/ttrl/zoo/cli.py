"""`ttrl zoo`: list the bundled models, and (re)train the tiny VLM's vision weights.

    ttrl zoo list
    ttrl zoo build {tiny-vlm,tiny-vlm-v2,tiny-vlm-v1} [--steps N] [--seed S] [--batch-size B] [--lr LR] [--out PATH] ...
    ttrl zoo build tiny-janus [--seed S] [--vq-steps N] [--und-steps N] [--gen-steps N] ... [--out PATH]
    ttrl zoo build tiny-omni [--seed S] [--omni-steps N] [--omni-tower-epochs N] ... [--out PATH] [--folder DIR]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

# defaults of the shipped weights, per model (zoo/assets/tiny_vlm_card.json, tiny_vlm_v2_card.json, tiny_vlm_v1_card.json)
BUILD_DEFAULTS = {
    "tiny-vlm": {"steps": 150, "seed": 0, "batch_size": 16, "lr": 2e-3, "pretrain_epochs": 20, "pretrain_lr": 2e-3,
                 "tower_lr_scale": 0.1, "yesno_turns": 2, "lm_lora_r": 8, "lm_lora_lr": 1e-3,
                 "yesno_balance": True, "yesno_describe": True, "yesno_text_steps": 150},
    "tiny-vlm-v2": {"steps": 150, "seed": 0, "batch_size": 16, "lr": 2e-3, "pretrain_epochs": 20, "pretrain_lr": 2e-3,
                    "tower_lr_scale": 0.1, "yesno_turns": 2, "lm_lora_r": 0, "lm_lora_lr": 5e-4,
                    "yesno_balance": False, "yesno_describe": False, "yesno_text_steps": 0},
    "tiny-vlm-v1": {"steps": 300, "seed": 0, "batch_size": 16, "lr": 1e-3, "pretrain_epochs": 0, "pretrain_lr": 2e-3,
                    "tower_lr_scale": 1.0, "yesno_turns": 1, "lm_lora_r": 0, "lm_lora_lr": 5e-4,
                    "yesno_balance": False, "yesno_describe": False, "yesno_text_steps": 0},
}


def add_zoo_parser(subparsers) -> argparse.ArgumentParser:
    zoo = subparsers.add_parser("zoo", help="bundled models: list them, or train the tiny VLM's vision weights")
    sub = zoo.add_subparsers(dest="zoo_command", required=True)
    sub.add_parser("list", help="zoo names, their cache folders and whether they are built")
    build = sub.add_parser(
        "build", help="train a bundled model's small parts (tiny-vlm, tiny-vlm-v2, tiny-vlm-v1: vision tower + projector (+ LM LoRA); tiny-janus; tiny-omni) and write its weights and card",
        description="Train the model's CLIP tower (stage 1, tiny-vlm only: alone, classifying shape and colour) and "
                    "projector (stage 2: through frozen SmolLM2) on easy-vqa's train split, evaluate greedy and maj@N "
                    "through ttrl's vision backend on a fixed easy-vqa test subset, and write the weights "
                    "(safetensors) and the card beside them.")
    build.add_argument("name", choices=[*sorted(BUILD_DEFAULTS), "tiny-janus", "tiny-omni"], help="the model to build")
    def dflt(key):
        return "(default: " + ", ".join(f"{d[key]} for {name}" for name, d in BUILD_DEFAULTS.items()) + ")"

    build.add_argument("--steps", type=int, default=None, help="stage-2 optimizer steps " + dflt("steps"))
    build.add_argument("--seed", type=int, default=None, help="initialisation and data-order seed " + dflt("seed"))
    build.add_argument("--batch-size", type=int, default=None, help="questions per stage-2 step " + dflt("batch_size"))
    build.add_argument("--lr", type=float, default=None, help="stage-2 AdamW learning rate (projector) " + dflt("lr"))
    build.add_argument("--pretrain-epochs", type=int, default=None,
                       help="stage 1: epochs of the tower alone classifying shape and colour; 0 = none " + dflt("pretrain_epochs"))
    build.add_argument("--pretrain-lr", type=float, default=None, help="stage-1 AdamW learning rate " + dflt("pretrain_lr"))
    build.add_argument("--tower-lr-scale", type=float, default=None,
                       help="stage 2: the tower's learning rate over the projector's; 0 = frozen " + dflt("tower_lr_scale"))
    build.add_argument("--yesno-turns", type=int, default=None,
                       help="stage 2: yes/no questions per colour and per shape question " + dflt("yesno_turns"))
    build.add_argument("--yesno-balance", action=argparse.BooleanOptionalAction, default=None,
                       help="stage 2: draw yes/no questions evenly over wording (negated or not, shape or colour) and "
                            "answer, so the answer cannot be read from the question alone " + dflt("yesno_balance"))
    build.add_argument("--yesno-describe", action=argparse.BooleanOptionalAction, default=None,
                       help="stage 2: yes/no targets name the image's colour and shape before the answer "
                            "('red circle, answer: no') " + dflt("yesno_describe"))
    build.add_argument("--yesno-text-steps", type=int, default=None,
                       help="with --yesno-describe and --lm-lora-r: at most this many text-only steps teaching the LM "
                            "LoRA to answer from a written description before stage 2 " + dflt("yesno_text_steps"))
    build.add_argument("--lm-lora-r", type=int, default=None,
                       help="stage 2: rank of a LoRA on every LM projection, trained with the projector and merged at "
                            "assembly (LLaVA's stage 2 tunes its LM); 0 = LM frozen " + dflt("lm_lora_r"))
    build.add_argument("--lm-lora-lr", type=float, default=None, help="stage 2: the LM LoRA's learning rate " + dflt("lm_lora_lr"))
    build.add_argument("--eval-votes", type=int, default=16,
                       help="samples per question for the card's maj@N, at ttrl's default temperature (default: 16)")
    build.add_argument("--eval-per-type", type=int, default=100,
                       help="test questions per type (colour, shape, yes/no) in the final evaluation (default: 100)")
    build.add_argument("--threads", type=int, default=None,
                       help="torch CPU threads (default: torch's choice); 1 is much faster when other jobs share the CPU")
    build.add_argument("--out", type=Path, default=None,
                       help="weights file to write (default: the model's package asset in zoo/assets)")
    _add_tiny_janus_options(build)
    _add_tiny_omni_options(build)
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
            if isinstance(f.default, bool):  # bool("false") is True: --und-pairs / --no-und-pairs instead
                kw = {"action": argparse.BooleanOptionalAction}
            grp.add_argument("--" + f.name.replace("_", "-"), dest=f"tj_{f.name}", default=f.default, metavar=f.name.upper(),
                             help=f"{f.metadata['help']} (default: {f.default})".replace('%', '%%'), **kw)
    grp.add_argument("--folder", type=Path, default=None,
                     help="also keep the assembled folder here (tiny-janus, tiny-omni; tiny-omni replaces it)")


def _add_tiny_omni_options(build) -> None:
    """tiny-omni's architecture and budget flags (--omni-*), generated from their dataclasses (zoo/tiny_omni*.py)."""
    import dataclasses

    from .tiny_omni import Arch
    from .tiny_omni_train import Budget

    grp = build.add_argument_group("tiny-omni (architecture and budget; defaults are the full build's)")
    for cls in (Arch, Budget):
        for f in dataclasses.fields(cls):
            grp.add_argument("--omni-" + f.name.replace("_", "-"), dest=f"to_{f.name}", default=f.default,
                             type=type(f.default), metavar=f.name.upper(),
                             help=f"{f.metadata['help']} (default: {f.default})".replace('%', '%%'))


def _list() -> int:
    from . import all_models, cache_root

    for name, model in all_models().items():
        try:
            path = cache_root() / "models" / model.folder()
            state = "built" if (path / "config.json").exists() else "builds on first use"
        except FileNotFoundError as e:
            path, state = None, f"unavailable: {e}"
        print(f"{name:14s} {state:20s} {path or ''}")
        from .tiny_vlm import TOWERS

        if name in TOWERS and TOWERS[name].card_path.exists():
            ev = json.loads(TOWERS[name].card_path.read_text())["evaluation"]
            acc = ", ".join(f"{k} {v:.0%}" for k, v in ev["accuracy"].items())
            print(f"{'':14s} easy-vqa test (greedy, n={ev['n']}): {acc}")
    return 0


def cmd_zoo(ns: argparse.Namespace) -> int:
    if ns.zoo_command == "list":
        return _list()
    from ..seeds import use_deterministic_kernels

    use_deterministic_kernels()  # same seed, same weights on any thread count
    if ns.zoo_command == "build" and ns.name == "tiny-janus":
        return _build_tiny_janus(ns)
    if ns.zoo_command == "build" and ns.name == "tiny-omni":
        return _build_tiny_omni(ns)
    if ns.zoo_command == "build":
        from .tiny_vlm import TOWERS
        from .tiny_vlm_train import train

        opts = {k: (v if getattr(ns, k) is None else getattr(ns, k)) for k, v in BUILD_DEFAULTS[ns.name].items()}
        tower = TOWERS[ns.name]
        out = Path(ns.out) if ns.out is not None else tower.weights
        card = train(**opts, out=out, tower=tower, eval_per_type=ns.eval_per_type, eval_votes=ns.eval_votes,
                     threads=ns.threads)
        print(json.dumps({"weights": str(out), "build_seconds": card["training"]["build_seconds"],
                          "accuracy": card["evaluation"]["accuracy"],
                          f"maj@{ns.eval_votes}": card["evaluation"].get(f"maj@{ns.eval_votes}")}, indent=2))
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
    card = train(arch, budget, seed=0 if ns.seed is None else ns.seed, out=out, folder=ns.folder, threads=ns.threads or 1)
    print(json.dumps({"weights": str(out), "train_seconds": card["training"]["train_seconds"],
                      "evaluation": card["evaluation"]}, indent=2))
    return 0


def _build_tiny_omni(ns: argparse.Namespace) -> int:
    import dataclasses

    from .tiny_omni import ASSET, Arch
    from .tiny_omni_train import Budget, train

    pick = {k[3:]: v for k, v in vars(ns).items() if k.startswith("to_")}
    arch = Arch(**{f.name: pick[f.name] for f in dataclasses.fields(Arch)})
    budget = Budget(**{f.name: pick[f.name] for f in dataclasses.fields(Budget)})
    out = Path(ns.out) if ns.out is not None else ASSET
    card = train(arch, budget, seed=0 if ns.seed is None else ns.seed, out=out, folder=ns.folder, threads=ns.threads or 1)
    print(json.dumps({"weights": str(out), "train_seconds": card["training"]["train_seconds"],
                      "evaluation": {k: {c: v[c]["accuracy"] for c in v if c != "n"} for k, v in card["evaluation"].items()}},
                     indent=2))
    return 0
