"""Baseline WER per shift on the shipped speech set (speech:test): greedy decoding, and optionally
the minimum-Bayes-risk pick of N samples (the `mbr` reward's top sample), with plain transformers
generate. One thread.

    python scripts/speech_baseline.py --model whisper-base
    python scripts/speech_baseline.py --model whisper-tiny-en --mbr 8 --temperature 1.0
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="whisper-tiny-en", help="whisper-base, whisper-tiny-en or a Hugging Face folder")
    ap.add_argument("--mbr", type=int, default=0, help="also sample N transcripts and score the MBR pick (0: off)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-k", type=int, default=0, help="0: sample from the full softmax (no top-k cut)")
    ap.add_argument("--similarity", default="wer", help="MBR similarity: wer, cer or chrf")
    ap.add_argument("--shift", default="all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--out", help="write per-item results as JSONL here")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from ttrl.extractors.transcript import normalize_transcript
    from ttrl.media import load_audio
    from ttrl.metrics import cer, wer
    from ttrl.rewards.mbr import mbr_rewards
    from ttrl.tasks import load_dataset
    from ttrl.zoo.whisper import SOURCES, convert_whisper

    path = convert_whisper(args.model) if args.model in SOURCES else args.model
    model = WhisperForConditionalGeneration.from_pretrained(path).eval()
    proc = WhisperProcessor.from_pretrained(path)
    gen = {"max_new_tokens": args.max_new_tokens}
    if model.generation_config.is_multilingual:
        gen.update(language="en", task="transcribe")
    data = load_dataset("speech:test", {"shift": args.shift}, size=0, seed=args.seed)
    refs, greedy, picks, shifts, samples_n = [], [], [], [], []
    rows = []
    t0 = time.time()
    torch.manual_seed(args.seed)
    for n, it in enumerate(data.items):
        feats = proc(load_audio(it.query.audio[0]), sampling_rate=16000, return_tensors="pt").input_features
        with torch.no_grad():
            g = proc.batch_decode(model.generate(feats, **gen), skip_special_tokens=True)[0]
            row = {"id": it.query.id, "shift": it.meta["shift"], "greedy": g}
            if args.mbr:
                out = model.generate(feats, do_sample=True, temperature=args.temperature, top_k=args.top_k,
                                     num_return_sequences=args.mbr, **gen)
                samples = proc.batch_decode(out, skip_special_tokens=True)
                answers = [normalize_transcript(s) or None for s in samples]
                r, _ = mbr_rewards(answers, args.similarity)
                row.update(samples=samples, mbr=samples[int(np.argmax(r))])
        refs.append(normalize_transcript(it.answer))
        greedy.append(normalize_transcript(row["greedy"]))
        picks.append(normalize_transcript(row.get("mbr", "")))
        samples_n.append([normalize_transcript(s) for s in row.get("samples", [])])
        shifts.append(row["shift"])
        rows.append(row)
        print(f"[{n + 1}/{len(data.items)} {time.time() - t0:.0f}s] {it.query.id}: {row['greedy']}", file=sys.stderr)
    by = defaultdict(list)
    for k, s in enumerate(shifts):
        by[s].append(k)
    by["all"] = list(range(len(shifts)))
    head = "| shift | n | greedy WER | greedy CER |"
    if args.mbr:
        head += (f" MBR-{args.mbr} WER (T={args.temperature}, {args.similarity}) | mean sample WER |"
                 f" oracle best-of-{args.mbr} WER | groups all identical |")
    print(f"model {args.model}, {len(refs)} utterances, {time.time() - t0:.0f} s")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for s, ks in by.items():
        line = (f"| {s} | {len(ks)} | {100 * wer([greedy[k] for k in ks], [refs[k] for k in ks]):.1f} "
                f"| {100 * cer([greedy[k] for k in ks], [refs[k] for k in ks]):.1f} |")
        if args.mbr:
            R = [refs[k] for k in ks]
            mean = np.mean([wer([samples_n[k][j] for k in ks], R) for j in range(args.mbr)])
            # the label-using upper bound of any selection among the samples (evaluation only)
            oracle = [min(samples_n[k], key=lambda h, k=k: wer([h], [refs[k]])) for k in ks]
            same = np.mean([len(set(samples_n[k])) == 1 for k in ks])
            line += (f" {100 * wer([picks[k] for k in ks], R):.1f} | {100 * mean:.1f} | {100 * wer(oracle, R):.1f} "
                     f"| {100 * same:.0f}% |")
        print(line)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
