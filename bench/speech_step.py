"""Time GRPO steps of the speech backend (Whisper) on shipped clips, split into sampling, reward and update, with
the process's peak memory after loading and after the steps. One thread.

    python bench/speech_step.py --model whisper-tiny-en --shift white10 --prompts 1 --n 8 --steps 3
"""
from __future__ import annotations

import argparse
import os
import resource
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="whisper-tiny-en")
    ap.add_argument("--shift", default="white10")
    ap.add_argument("--prompts", type=int, default=1, help="clips (groups) per step")
    ap.add_argument("--n", type=int, default=8, help="samples per clip")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--reward", default="mbr")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from ttrl.backends.speech import SpeechBackend
    from ttrl.config import Config
    from ttrl.extractors import get_extractor
    from ttrl.rewards import Reward
    from ttrl.tasks import load_dataset
    from ttrl.trainer import Trainer

    cfg = Config()
    cfg.model.model = args.model
    s = cfg.sampling
    s.n_votes = s.n_train = args.n
    s.temperature, s.max_new_tokens, s.batch_size = args.temperature, args.max_new_tokens, args.prompts * args.n
    t0 = time.perf_counter()
    policy = SpeechBackend(cfg.model, need_reference=cfg.grpo.kl_coef > 0, seed=0)
    print(f"load {time.perf_counter() - t0:.1f} s, peak RSS {peak_mb():.0f} MB")
    items = load_dataset("speech:test", {"shift": args.shift}, args.prompts * args.steps, 0).items
    trainer = Trainer(policy, get_extractor("transcript"), Reward(args.reward), s, cfg.grpo, "", 0)
    for k in range(args.steps):
        batch = [it.query for it in items[k * args.prompts:(k + 1) * args.prompts]]
        st = trainer.step(batch).stats
        print(f"step {k + 1}: {st.seconds:.1f} s (sample {st.seconds_sample:.1f}, reward {st.seconds_reward:.2f}, "
              f"update {st.seconds_update:.1f}), {st.tokens} tokens, mean length {st.response_length:.1f}, "
              f"groups trained {st.groups_trained}/{st.groups}, peak RSS {peak_mb():.0f} MB")


if __name__ == "__main__":
    main()
