"""Pilot of the tiny-omni design (docs/op_ttrav.md), LLaVA / Qwen-Audio style: the real pretrained Whisper-base encoder
(frozen, converted from its wheel by the zoo) loaded into the Qwen2.5-Omni thinker's own audio tower class
(Qwen2_5OmniAudioEncoder: Whisper's encoder, then 2x average pooling, ln_post = Whisper's final layer norm, and
`proj`, the trained audio projector) and tiny-vlm's CLIP tower (frozen) with its projector, into
SmolLM2-135M-Instruct (frozen, bfloat16). Only the projectors train (the audio one from scratch, the vision one
from tiny-vlm's), on the spoken easy-vqa TRAIN split (closed and open items); greedy accuracy on TEST items with
both inputs, with the audio removed and with the image removed. Measures seconds per stage, 1 thread.

    PYTHONPATH=src python scripts/tiny_omni_pilot.py --steps 60 --eval 60 [--out pilot.json]

A pilot, not the build: nothing is saved except the JSON of its measurements.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time

import torch

from ttrl.media import load_audio, load_image
from ttrl.tasks import load_dataset
from ttrl.zoo import resolve_model

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
INSTRUCTION = {"closed": "Answer with a single word.", "open": "Answer with one short sentence."}


def whisper_audio_tower(whisper_dir):
    """Qwen2.5-Omni's audio encoder holding Whisper-base's encoder weights (the names are Whisper's, the final layer
    norm becomes ln_post), attending over a whole clip (n_window 1500: one 30 s chunk); `proj` is left out (Identity):
    it is the trained projector."""
    from safetensors.torch import load_file
    from transformers import AutoConfig
    from transformers.models.qwen2_5_omni.configuration_qwen2_5_omni import Qwen2_5OmniAudioEncoderConfig
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniAudioEncoder

    w = AutoConfig.from_pretrained(whisper_dir)
    cfg = Qwen2_5OmniAudioEncoderConfig(num_mel_bins=w.num_mel_bins, encoder_layers=w.encoder_layers,
                                        encoder_attention_heads=w.encoder_attention_heads,
                                        encoder_ffn_dim=w.encoder_ffn_dim, d_model=w.d_model,
                                        max_source_positions=w.max_source_positions, n_window=w.max_source_positions,
                                        output_dim=w.d_model)
    tower = Qwen2_5OmniAudioEncoder(cfg)
    sd = load_file(str(whisper_dir) + "/model.safetensors")
    enc = {k[len("model.encoder."):]: v for k, v in sd.items() if k.startswith("model.encoder.")}
    pos = enc.pop("embed_positions.weight")
    if not torch.allclose(pos, tower.positional_embedding.positional_embedding, atol=1e-3):
        raise RuntimeError("Whisper's position table is not the sinusoids Qwen2.5-Omni's audio encoder computes")
    enc["ln_post.weight"], enc["ln_post.bias"] = enc.pop("layer_norm.weight"), enc.pop("layer_norm.bias")
    missing, unexpected = tower.load_state_dict(enc, strict=False)
    if unexpected or set(missing) - {"proj.weight", "proj.bias", "audio_bos_eos_token.weight"}:
        raise RuntimeError(f"Whisper weights do not fit: missing {missing}, unexpected {unexpected}")
    tower.proj = torch.nn.Identity()
    return tower.eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--eval", type=int, default=60, help="closed TEST items per condition")
    ap.add_argument("--eval-open", type=int, default=30, help="open-ended TEST items per condition")
    ap.add_argument("--save", default=None, help="safetensors file for the trained projectors")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    from transformers import AutoProcessor, LlavaForConditionalGeneration, WhisperFeatureExtractor

    times: dict[str, float] = {}
    t = time.time()
    vlm = LlavaForConditionalGeneration.from_pretrained(resolve_model("tiny-vlm"), dtype=torch.float32).eval()
    proc = AutoProcessor.from_pretrained(resolve_model("tiny-vlm"))
    whisper_dir = resolve_model("whisper-base")
    encoder = whisper_audio_tower(whisper_dir)
    fe = WhisperFeatureExtractor.from_pretrained(whisper_dir)
    vlm.requires_grad_(False)
    lm, head = vlm.model.language_model.to(torch.bfloat16), vlm.lm_head.to(torch.bfloat16)
    tok = proc.tokenizer
    times["load_s"] = time.time() - t

    train = (load_dataset("easyvqa-spoken:train", {"kind": "closed"}, 0, 0).items
             + load_dataset("easyvqa-spoken:train", {"kind": "open"}, 0, 0).items)
    test = load_dataset("easyvqa-spoken:test", {"kind": "closed"}, args.eval, 0).items
    test_open = load_dataset("easyvqa-spoken:test", {"kind": "open"}, args.eval_open, 0).items

    # frozen encoders: each clip and image once
    t = time.time()
    audio = {}
    with torch.no_grad():
        for it in train + test + test_open:
            wav = load_audio(it.query.audio[0])
            f = fe(wav, sampling_rate=16000, return_attention_mask=True, padding="max_length", return_tensors="pt")
            n = int(f["attention_mask"].sum())  # the clip's mel frames, as Qwen2.5-Omni's processor passes them
            audio[it.query.id] = encoder(f["input_features"][0, :, :n], feature_lens=torch.tensor([n]),
                                         aftercnn_lens=torch.tensor([(n - 1) // 2 + 1])).last_hidden_state
    times["whisper_encoder_s_per_clip"] = (time.time() - t) / len(train + test + test_open)
    t = time.time()
    towers = {}
    with torch.no_grad():
        for it in train + test + test_open:
            px = proc.image_processor([load_image(it.query.images[0])], return_tensors="pt")["pixel_values"]
            towers[it.query.id] = vlm.model.vision_tower(pixel_values=px).last_hidden_state[0]  # 17 x 128, "full"
    times["vision_tower_s_per_image"] = (time.time() - t) / len(train + test + test_open)

    a_proj = torch.nn.Linear(encoder.config.d_model, lm.config.hidden_size)  # the thinker's audio `proj`
    v_proj = vlm.model.multi_modal_projector.float()  # tiny-vlm's, trained into SmolLM2: a starting point
    v_proj.requires_grad_(True)
    params = list(a_proj.parameters()) + list(v_proj.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    warm = max(1, args.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.1 + 0.45 * (1 + math.cos(math.pi * s / args.steps))))
    embed = lm.get_input_embeddings()

    def ids(text: str) -> torch.Tensor:
        return torch.tensor(tok(text, add_special_tokens=False)["input_ids"])

    head_ids = ids(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n")

    def sequence(it, use_audio=True, use_image=True, answer: str | None = None):
        """Input embeddings [L, D] (bfloat16) and the label ids [L] (-100 outside the answer)."""
        kind = "open" if it.meta.get("color") else "closed"
        tail = ids(f"{it.query.prompt} {INSTRUCTION[kind]}<|im_end|>\n<|im_start|>assistant\n")
        parts = [embed(head_ids)]
        if use_audio:
            parts.append(a_proj(audio[it.query.id]).to(torch.bfloat16))
        if use_image:
            parts.append(v_proj(towers[it.query.id]).to(torch.bfloat16))
        parts.append(embed(tail))
        n_prompt = sum(p.shape[0] for p in parts)
        labels = torch.full((n_prompt,), -100)
        if answer is not None:
            a = ids(answer + "<|im_end|>")
            parts.append(embed(a))
            labels = torch.cat([labels, a])
        return torch.cat(parts), labels

    order = list(range(len(train)))
    random.shuffle(order)
    losses, t = [], time.time()
    for step in range(args.steps):
        batch = [train[order[(step * args.batch + j) % len(order)]] for j in range(args.batch)]
        seqs = [sequence(it, answer=str(it.answer)) for it in batch]
        width = max(s[0].shape[0] for s in seqs)
        x = torch.zeros(len(seqs), width, lm.config.hidden_size, dtype=torch.bfloat16)
        y = torch.full((len(seqs), width), -100)
        mask = torch.zeros(len(seqs), width, dtype=torch.long)
        for r, (e, lab) in enumerate(seqs):  # right padding
            x[r, :len(e)], y[r, :len(lab)], mask[r, :len(e)] = e, lab, 1
        h = lm(inputs_embeds=x, attention_mask=mask, use_cache=False).last_hidden_state[:, :-1]
        tgt = y[:, 1:]
        keep = tgt != -100
        loss = torch.nn.functional.cross_entropy(head(h[keep]).float(), tgt[keep])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(round(loss.item(), 4))
        if (step + 1) % 10 == 0 or step == 0:
            print(f"step {step + 1}/{args.steps} loss {sum(losses[-10:]) / len(losses[-10:]):.3f} "
                  f"({time.time() - t:.0f} s)", flush=True)
    times["train_s_per_step"] = (time.time() - t) / max(1, args.steps)

    if args.save:
        from safetensors.torch import save_file

        save_file({**{f"audio_proj.{k}": v.contiguous() for k, v in a_proj.state_dict().items()},
                   **{f"vision_proj.{k}": v.contiguous() for k, v in v_proj.state_dict().items()}}, args.save)

    @torch.no_grad()
    def greedy(it, use_audio, use_image, max_new=6) -> str:
        e, _ = sequence(it, use_audio, use_image)
        out = lm(inputs_embeds=e[None], use_cache=True)
        cache, got = out.past_key_values, []
        for _ in range(max_new):
            nxt = int(head(out.last_hidden_state[0, -1]).argmax())
            if nxt == tok.convert_tokens_to_ids("<|im_end|>"):
                break
            got.append(nxt)
            out = lm(inputs_embeds=embed(torch.tensor([[nxt]])), past_key_values=cache, use_cache=True)
            cache = out.past_key_values
        return tok.decode(got).strip().lower().rstrip(".")

    t = time.time()
    acc = {}
    for name, ua, ui in (("both", True, True), ("audio_removed", False, True), ("image_removed", True, False)):
        answers = [greedy(it, ua, ui) for it in test]
        acc[name] = sum(a == str(it.answer) for a, it in zip(answers, test)) / len(test)
        print(name, acc[name], answers[:8], flush=True)
    times["eval_s_per_item"] = (time.time() - t) / (3 * len(test))
    from ttrl.metrics import rouge_l
    from ttrl.tasks.easy_vqa_spoken import names_scene

    open_scores = {}
    for name, ua, ui in (("both", True, True), ("audio_removed", False, True), ("image_removed", True, False)):
        answers = [greedy(it, ua, ui, max_new=16) for it in test_open]
        open_scores[name] = {"names_colour_and_shape": sum(names_scene(a, it) for a, it in zip(answers, test_open))
                             / len(test_open),
                             "rouge_l": rouge_l(answers, [str(it.answer) for it in test_open])}
        print(name, open_scores[name], answers[:4], flush=True)
    result = {"steps": args.steps, "batch": args.batch, "lr": args.lr, "train_items": len(train),
              "eval_items": len(test), "seconds": {k: round(v, 3) for k, v in times.items()},
              "loss_curve": losses[::max(1, args.steps // 15)] + losses[-1:], "accuracy_closed_test": acc,
              "open_test": open_scores, "eval_open_items": len(test_open),
              "trainable_parameters": sum(p.numel() for p in params)}
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
