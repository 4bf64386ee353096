"""The `ttrl` command line. Flags are generated from the typed config (ttrl/config.py) and from each
reward's params, so `ttrl run --help` always documents every option with its default."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
import warnings
from pathlib import Path

from .config import Config, ConfigError, apply_overrides, field_types, load_yaml, sections, set_option, validate_config
from .data import DataError


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _fmt_default(f: dataclasses.Field) -> str:
    d = f.default_factory() if f.default is dataclasses.MISSING else f.default
    return json.dumps(d) if isinstance(d, (dict, list)) else repr(d) if isinstance(d, str) else str(d)


def _add_option(group, names: list[str], dest: str, f: dataclasses.Field, prefix: str, **kw) -> None:
    """One flag per config field; values stay unset unless given, so YAML and defaults show through."""
    kw.update(dest=dest, default=argparse.SUPPRESS,
              help=f"{prefix}{f.metadata.get('help', '')} (default: {_fmt_default(f)})".replace("%", "%%"))
    if f.metadata.get("choices"):
        kw["choices"] = f.metadata["choices"]
    else:
        kw["metavar"] = f.name.upper()
    group.add_argument(*names, **kw)


def build_parser() -> argparse.ArgumentParser:
    from .rewards import all_rewards

    p = argparse.ArgumentParser(prog="ttrl", description="Label-free test-time reinforcement learning.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="adapt a model on unlabeled inputs and evaluate it",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         description="Adapt a model by test-time RL. Precedence: defaults < --config YAML < flags.")
    run.add_argument("--config", default=argparse.SUPPRESS, help="YAML file with options (sections or flat keys)")
    run.add_argument("--overwrite", action="store_true", default=argparse.SUPPRESS,
                     help="replace an existing run folder (default: refuse)")
    run.add_argument("--resume", metavar="DIR", default=argparse.SUPPRESS,
                     help="continue a killed run from its folder (its config.yaml and last checkpoint)")
    for sec, cls in sections().items():
        grp = run.add_argument_group(sec)
        for f in dataclasses.fields(cls):
            names = [_flag(f.name), "-m"] if f.name == "model" else [_flag(f.name)]
            _add_option(grp, names, f"{sec}.{f.name}", f, "")
    grp = run.add_argument_group("reward parameters")
    for name, spec in sorted(all_rewards().items()):
        ptypes = field_types(spec.params)
        for f in dataclasses.fields(spec.params):
            _add_option(grp, [_flag(f"{name}_{f.name}")], f"rewardparam.{name}.{f.name}", f, f"[{name}] ",
                        type=ptypes[f.name] if ptypes[f.name] in (int, float, str) else str)
    sub.add_parser("rewards", help="list every reward with its help text")
    sub.add_parser("backends", help="list the model backends and rollout engines (--backend, --decoder)")
    rep = sub.add_parser("report", help="write report.html for a run folder (also an unfinished or killed run)")
    rep.add_argument("run_dir", metavar="RUN_DIR")
    rep.add_argument("--out", default=None, help="HTML file to write (default: RUN_DIR/report.html)")
    cmp = sub.add_parser("compare", help="compare runs: a terminal table and compare.html with overlaid curves")
    cmp.add_argument("run_dirs", metavar="RUN_DIR", nargs="+")
    cmp.add_argument("--out", default="compare.html", help="HTML file to write (default: compare.html)")
    from .zoo.cli import add_zoo_parser

    add_zoo_parser(sub)
    return p


def config_from_args(ns: argparse.Namespace) -> Config:
    """Defaults < --config YAML < flags, merged first and validated once (a YAML n_votes and a flag
    n_train are checked together)."""
    cfg = Config()
    given = vars(ns)
    if "config" in given:
        apply_overrides(cfg, load_yaml(given["config"]), given["config"], validate=False)
    for key, value in given.items():
        if key.startswith("rewardparam."):
            _, rname, fname = key.split(".", 2)
            params = {k: dict(v or {}) for k, v in cfg.reward.reward_params.items()}
            params.setdefault(rname, {})[fname] = value
            set_option(cfg, "reward", "reward_params", params, "command line: reward.reward_params")
        elif "." in key:
            sec, name = key.split(".", 1)
            set_option(cfg, sec, name, value, _flag(name))
    validate_config(cfg)
    return cfg


def cmd_rewards() -> int:
    from .rewards import all_rewards

    for name, spec in sorted(all_rewards().items()):
        print(f"{name:20s} {spec.help}")
        for f in dataclasses.fields(spec.params):
            print(f"{'':22s}{_flag(f'{name}_{f.name}')} (default {_fmt_default(f)}): {f.metadata.get('help', '')}")
    return 0


def cmd_backends() -> int:
    from .backends import all_backends
    from .engines import all_engines

    print("backends (--backend; auto picks the first, in this order, whose check accepts the model's config):")
    for spec in sorted(all_backends().values(), key=lambda s: -s.priority):
        print(f"  {spec.name:10s} {spec.help}")
    print("rollout engines (--decoder; auto: lean where it fits, else hf):")
    for name, spec in sorted(all_engines().items()):
        print(f"  {name:10s} {spec.help}")
    return 0


def cmd_run(ns: argparse.Namespace) -> int:
    from . import preflight
    from .runlog import prepare

    if "resume" in vars(ns):
        return _resume(ns)
    cfg = config_from_args(ns)
    if not cfg.run.out:
        cfg.run.out = time.strftime("runs/%Y%m%d-%H%M%S")
    preflight.check(cfg)
    ns.run_dir = prepare(cfg.run.out, overwrite=getattr(ns, "overwrite", False))
    from .run import run

    return _report(cfg, run(cfg))


def _resume(ns: argparse.Namespace) -> int:
    from . import preflight
    from .runlog import check_resumable

    out = Path(ns.resume)
    others = [k for k in vars(ns) if "." in k]
    if others:
        raise ConfigError(f"--resume takes its settings from {out / 'config.yaml'}; drop the other options")
    check_resumable(out)
    cfg = apply_overrides(Config(), load_yaml(out / "config.yaml"), str(out / "config.yaml"))
    cfg.run.out = str(out)
    if (out / "summary.json").exists():
        print(f"{out}: the run had finished; nothing to resume")
        return _report(cfg, json.loads((out / "summary.json").read_text()))
    preflight.check(cfg)
    ns.run_dir = out
    from .run import run

    return _report(cfg, run(cfg, resume=True))


def _report(cfg: Config, summary: dict) -> int:
    out = cfg.run.out
    if "online_accuracy" in summary:
        print(f"\n{cfg.protocol.protocol} accuracy {_pct(summary['online_accuracy'])}   ({summary['n_items']} items "
              f"answered as they arrived, {_updates(summary)}, reward {summary['reward']})")
        _skipped_note(summary)
        if summary.get("n_resets"):
            print(f"resets            {summary['n_resets']}, {1000 * summary['reset_seconds_mean']:.1f} ms each")
        print(f"outputs in {out}/  ({summary['seconds']:.0f} s, peak memory {summary['peak_rss_mb']:.0f} MB)")
        return 0
    if "adapted_n_images" in summary:  # text-to-image: the pixel checker's GenEval-style shares
        return _report_images(cfg, summary)
    print(f"\nbase accuracy     {_pct(summary['base_accuracy'])}   (greedy, {summary['n_eval']} items)")
    if summary.get("base_maj_accuracy") is not None:
        print(f"base maj@{cfg.protocol.base_maj_votes:<8d} {_pct(summary['base_maj_accuracy'])}   (ceiling for sharpening)")
    if summary.get("base_medoid_accuracy") is not None:  # free text: the medoid of the N samples is the vote
        print(f"base medoid@{cfg.protocol.base_maj_votes:<5d} {_pct(summary['base_medoid_accuracy'])}   "
              "(the sample closest in meaning to the others)")
    print(f"adapted accuracy  {_pct(summary['adapted_accuracy'])}   "
          f"(after {_updates(summary)} on {summary['n_adapt']} unlabeled items, reward {summary['reward']})")
    if summary.get("adapted_wer") is not None:  # speech: word / character error rates (lower is better)
        for name, what in (("base", "greedy"), ("base_maj", f"majority of {cfg.protocol.base_maj_votes}"),
                           ("adapted", "greedy")):
            if summary.get(f"{name}_wer") is not None:
                print(f"{name + ' WER':<17s} {_pct(summary[f'{name}_wer'])}   (CER {_pct(summary[f'{name}_cer'])}, {what})")
    if summary.get("answer_type") == "text" and summary.get("adapted_rouge_l") is not None:  # free text: overlap
        # with the references, higher is better (one-word labels have no BLEU to speak of)
        for key, what, fmt in (("rouge_l", "ROUGE-L", "{:.3f}"), ("bleu", "BLEU", "{:.1f}"),
                               ("embedding_similarity", "embedding sim.", "{:.3f}")):
            if summary.get(f"adapted_{key}") is not None and summary.get(f"base_{key}") is not None:
                print(f"{what:<17s} {fmt.format(summary[f'base_{key}'])} -> {fmt.format(summary[f'adapted_{key}'])}")
    _skipped_note(summary)
    for part, what in (("adapted_items", "the items adapted on"), ("other_items", "items never adapted on")):
        if summary.get(f"n_{part}"):
            print(f"  {what + ':':24s} base {_pct(summary[f'{part}_base_accuracy'])} -> adapted "
                  f"{_pct(summary[f'{part}_adapted_accuracy'])}   ({summary[f'n_{part}']} items)")
    print(f"outputs in {out}/  ({summary['seconds']:.0f} s, peak memory {summary['peak_rss_mb']:.0f} MB)")
    return 0


def _report_images(cfg: Config, summary: dict) -> int:
    from .scenes import CATEGORIES

    print(f"\nimages fully matching their prompt (pixel checker, GenEval-style; {summary['n_eval']} prompts x "
          f"{cfg.image.eval_images}):")
    print(f"  base {_pct(summary['base_accuracy'])} -> adapted {_pct(summary['adapted_accuracy'])}   (after "
          f"{_updates(summary)} on {summary['n_adapt']} prompts, reward {summary['reward']}, introspector "
          f"{summary['introspector']})")
    for cat in CATEGORIES:
        if summary.get(f"adapted_{cat}") is not None:
            print(f"  {cat:9s} base {_pct(summary.get(f'base_{cat}'))} -> adapted {_pct(summary[f'adapted_{cat}'])}")
    for part, what in (("adapted_items", "prompts adapted on"), ("other_items", "prompts never adapted on")):
        if summary.get(f"n_{part}"):
            print(f"  {what + ':':25s} base {_pct(summary.get(f'{part}_base_accuracy'))} -> adapted "
                  f"{_pct(summary[f'{part}_adapted_accuracy'])}   ({summary[f'n_{part}']} prompts)")
    _skipped_note(summary)
    print(f"images and grid.png in {cfg.run.out}/  ({summary['seconds']:.0f} s, peak memory "
          f"{summary['peak_rss_mb']:.0f} MB)")
    return 0


def _updates(summary: dict) -> str:
    """How much adaptation happened: steps, unless some of them changed nothing (every group gated)."""
    steps, updates = summary["steps"], summary.get("updates", summary["steps"])
    if updates == steps:
        return f"{steps} steps"
    return f"{updates} updates in {steps} steps" if updates else "0 updates"


def _skipped_note(summary: dict) -> None:
    if summary["steps"] and summary.get("updates", summary["steps"]) == 0:
        print(f"note: every group was skipped ({summary.get('skipped') or 'see events.jsonl'}), so the weights "
              "are the base model's")


def _pct(x) -> str:
    return "  n/a" if x is None else f"{100 * x:5.1f}%"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.simplefilter("default")
    ns = build_parser().parse_args(argv)
    interrupted = False
    try:
        if ns.command == "rewards":
            return cmd_rewards()
        if ns.command == "backends":
            return cmd_backends()
        if ns.command == "report":
            from .report import write_report

            print(write_report(ns.run_dir, ns.out))
            return 0
        if ns.command == "compare":
            from .compare import compare

            table, path = compare(ns.run_dirs, ns.out)
            print(f"{table}\n\n{path}")
            return 0
        if ns.command == "zoo":
            from .zoo.cli import cmd_zoo

            return cmd_zoo(ns)
        return cmd_run(ns)
    except (ConfigError, DataError) as e:
        print(f"ttrl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        interrupted = True  # reported below, once the frames (and their progress bars) are gone
    except OSError as e:  # the machine, not the input: a full disk, a folder made read-only mid-run, ...
        what = f"{e.strerror}: {e.filename}" if e.strerror and e.filename else str(e)
        print(f"ttrl: error: {what}; {_kept(getattr(ns, 'run_dir', None))}", file=sys.stderr)
        return 1
    if interrupted:
        print(f"\nttrl: interrupted; {_kept(getattr(ns, 'run_dir', None))}", file=sys.stderr)
        return 130
    return 0


def _kept(run_dir) -> str:
    """What an interrupted or failed run leaves behind, and how to go on."""
    from .runlog import folder_state

    if run_dir is None:
        return "nothing was written"
    if folder_state(run_dir) != "run":
        return f"no results were written yet ({run_dir} can be reused: run the same command again)"
    return f"the work done so far is kept in {run_dir}; continue with: ttrl run --resume {run_dir}"


if __name__ == "__main__":
    sys.exit(main())
