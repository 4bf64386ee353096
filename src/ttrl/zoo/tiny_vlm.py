"""Small vision-language models that really see, built locally for test-time RL on easy-vqa.

No pretrained VLM, CLIP or SigLIP ships inside a wheel, so the models are grafted together in the LLaVA
architecture (`LlavaForConditionalGeneration`):

* language model: SmolLM2-135M-Instruct (zoo name "smollm2-135m"), unchanged apart from one added
  ``<image>`` token; it stays frozen while the vision side trains;
* vision tower: a tiny CLIP encoder trained from scratch on 64x64 images (its size: `Tower`); all final-layer
  states (patches + CLS) go to the language model;
* projector: LLaVA's two-layer MLP (tower width -> 576 -> 576, GELU).

Three towers are registered (`TOWERS`), all 16x16 patches (17 image tokens): "tiny-vlm" (v3: the tower first
learns alone to classify shape and colour, then aligns through the language model with a LoRA on it, answering
yes/no questions by naming what it sees first: "red circle, answer: no"), "tiny-vlm-v2" (the same tower recipe,
LM frozen; its yes/no answers follow the wording) and "tiny-vlm-v1" (trained through the language model only;
shape near chance). v2 and v1 stay as shipped for the answer-prior collapse study.

The vision tower, projector and (v3) the LM's LoRA are trained (`tiny_vlm_train.train`, on easy-vqa's TRAIN
split); their weights ship as a small safetensors file in ``zoo/assets`` and `assemble` grafts them onto the SmolLM2 weights
into a folder that `AutoProcessor` / `AutoModelForImageTextToText` load. The zoo (`resolve_model("tiny-vlm")`)
does that once per weights file and caches the result.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from . import asset_folder, register_model, resolve_model, save_folder
from .lora import LORA_PREFIX, merge_lora

ASSETS = Path(__file__).parent / "assets"
IMAGE_TOKEN = "<image>"
IMAGE_SIZE = 64  # easy-vqa images are 64x64
# Bumped whenever `assemble` changes what it writes, so cached folders are rebuilt (see zoo.py).
BUILD_VERSION = 1
SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
TRAINED_PREFIXES = ("model.vision_tower.", "model.multi_modal_projector.")


@dataclass(frozen=True)
class Tower:
    """One registered tiny VLM: its CLIP tower's size and where its trained weights and card ship."""
    name: str  # zoo name
    asset: str  # weights file in zoo/assets (tower + projector, safetensors)
    card: str  # evaluation card beside it
    patch_size: int
    hidden_size: int = 128
    intermediate_size: int = 512
    num_layers: int = 2
    num_heads: int = 4

    @property
    def weights(self) -> Path:
        return ASSETS / self.asset

    @property
    def card_path(self) -> Path:
        return ASSETS / self.card

    @property
    def image_tokens(self) -> int:
        return (IMAGE_SIZE // self.patch_size) ** 2 + 1  # patches + CLS ("full" feature selection)


TOWERS = {
    # v3 (issue 16): v2's tower recipe, plus a LoRA on SmolLM2 (merged at assembly), yes/no questions balanced over
    # wording and answer, yes/no targets that name the colour and shape first, and a text warm-up of that comparison
    "tiny-vlm": Tower("tiny-vlm", "tiny_vlm_vision.safetensors", "tiny_vlm_card.json", patch_size=16),
    # v2: v1's architecture, trained in two stages (tiny_vlm_train), LM frozen; its yes/no answers follow the
    # question's wording (scripts/yesno_wording.py). 8x8 patches see shapes better (a tower alone: 94% vs 82%
    # shape accuracy) but cost 65 image tokens, too slow to align within the CPU budget
    "tiny-vlm-v2": Tower("tiny-vlm-v2", "tiny_vlm_v2_vision.safetensors", "tiny_vlm_v2_card.json", patch_size=16),
    # v1 as shipped before issue 16: 16x16 patches, 2 layers, 17 image tokens
    "tiny-vlm-v1": Tower("tiny-vlm-v1", "tiny_vlm_v1_vision.safetensors", "tiny_vlm_v1_card.json", patch_size=16),
}
DEFAULT = TOWERS["tiny-vlm"]
ASSET = DEFAULT.weights
CARD_NAME = DEFAULT.card
NUM_IMAGE_TOKENS = DEFAULT.image_tokens

def chatml_template(image_token: str) -> str:
    """SmolLM2's ChatML template, generalised: content is a string, or a list of {"type": "image"} and
    {"type": "text", "text": ...} parts; each image part renders as `image_token`, which the model's processor
    expands (tiny-vlm: one copy per image feature, `Tower.image_tokens`; tiny-janus: Janus' image markers)."""
    return (
        "{% for message in messages %}"
        "{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n' }}"
        "{% endif %}"
        "{{ '<|im_start|>' + message['role'] + '\n' }}"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for part in message['content'] %}"
        "{% if part['type'] == 'image' %}{{ '" + image_token + "' }}"
        "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
        "{% endfor %}{% endif %}"
        "{{ '<|im_end|>\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )


CHAT_TEMPLATE = chatml_template(IMAGE_TOKEN)


# -- architecture ----------------------------------------------------------------------------------
def vision_config(tower: Tower = DEFAULT):
    """The CLIP vision tower of `tower`: 64x64 input, `tower.patch_size` patches, width 128, 4 heads of 32, MLP 512.

    2 layers, 16x16 patches: ~0.5M parameters; with the projector (~0.4M) 3.6 MB in float32. Small on purpose: easy-vqa needs colour and coarse shape, trained in minutes on a CPU.
    """
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=tower.hidden_size, intermediate_size=tower.intermediate_size, num_hidden_layers=tower.num_layers,
        num_attention_heads=tower.num_heads, image_size=IMAGE_SIZE, patch_size=tower.patch_size, num_channels=3,
        projection_dim=tower.hidden_size, hidden_act="quick_gelu", layer_norm_eps=1e-5, attention_dropout=0.0,
    )


def llava_config(text_config, tower: Tower = DEFAULT):
    """LLaVA config around `text_config` (SmolLM2's LlamaConfig, vocab already including `<image>`).

    The image token is the last id of the vocabulary; the projector reads all final-layer states of the
    tower (layer -1, "full" = CLS kept), so one image costs `tower.image_tokens` tokens of context.
    """
    from transformers import LlavaConfig

    return LlavaConfig(
        vision_config=vision_config(tower), text_config=text_config,
        image_token_index=text_config.vocab_size - 1, image_seq_length=tower.image_tokens,
        projector_hidden_act="gelu", vision_feature_select_strategy="full", vision_feature_layer=-1,
        multimodal_projector_bias=True, tie_word_embeddings=text_config.tie_word_embeddings,
    )


# -- assembly --------------------------------------------------------------------------------------
def _text_folder() -> Path:
    return Path(resolve_model("smollm2-135m"))


def _load_folder_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    sd: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        sd.update(load_file(str(f)))
    if not sd:
        raise FileNotFoundError(f"no safetensors weights in {folder}")
    return sd


def _processor(tokenizer, tower: Tower = DEFAULT):
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    # PIL backend: works without torchvision (the torchvision one is chosen automatically when present)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_resize=True, do_center_crop=True, do_convert_rgb=True,
    )
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=tower.patch_size,
        vision_feature_select_strategy="full", num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE, image_token=IMAGE_TOKEN,
    )


def build(vision_weights: Path | None = None, seed: int = 0, tower: Tower = DEFAULT):
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
    config = llava_config(text_config, tower)

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
    trained = load_vision_weights(vision_weights) if vision_weights is not None else {}
    target.update({k: v for k, v in trained.items() if not k.startswith(LORA_PREFIX)})
    missing, unexpected = model.load_state_dict(target, strict=False)
    missing = [k for k in missing if vision_weights is not None or not k.startswith(TRAINED_PREFIXES)]
    if missing or unexpected or unknown:
        raise RuntimeError(f"weights do not fit: missing {missing[:5]}, unexpected {(unexpected + unknown)[:5]}")
    if config.tie_word_embeddings:
        model.tie_weights()
        assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    merge_lora(model, trained)  # a tower built with `lm_lora_r` > 0 ships the LM's LoRA factors beside it

    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.suppress_tokens = [config.image_token_id]
    return model.eval(), _processor(tokenizer, tower)


def load_vision_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    sd = load_file(str(path))
    bad = [k for k in sd if not k.startswith(TRAINED_PREFIXES + (LORA_PREFIX,))]
    if bad:
        raise RuntimeError(f"{path} holds weights other than the vision tower, projector and LM LoRA: {bad[:5]}")
    return {k: v.float() for k, v in sd.items()}


def save_vision_weights(model, path: Path, lora: dict[str, torch.Tensor] | None = None) -> None:
    """The tower + projector (float32) and, if given, the LM's LoRA factors (float16: they are small numbers
    added to bfloat16-trained weights, and halve the shipped file)."""
    from safetensors.torch import save_file

    sd = {k: v.detach().float().contiguous() for k, v in model.state_dict().items() if k.startswith(TRAINED_PREFIXES)}
    sd.update({k: v.detach().half().contiguous() for k, v in (lora or {}).items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(sd, str(tmp), metadata={"format": "pt", "model": "ttrl tiny-vlm vision tower + projector"})
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def assemble(out_dir: Path, vision_weights: Path | None, tower: Tower = DEFAULT) -> Path:
    """Write a loadable LLaVA folder (model + processor) to `out_dir`, atomically.

    `vision_weights`: the trained tower + projector (safetensors); None = random init (for quick tests).
    """
    out_dir = Path(out_dir)
    model, processor = build(vision_weights, tower=tower)
    save_folder(out_dir, model, processor)
    return out_dir


def _register(tower: Tower, help: str) -> None:
    register_model(tower.name, folder=lambda: asset_folder(tower.name, tower.weights, BUILD_VERSION), help=help)(
        lambda out: assemble(out, tower.weights, tower))


_register(TOWERS["tiny-vlm"], "LLaVA-architecture SmolLM2-135M + a small CLIP tower and an LM LoRA trained on easy-vqa; "
          "answers yes/no by naming the colour and shape first (weights ship in zoo/assets; `ttrl zoo build tiny-vlm` "
          "retrains them)")
_register(TOWERS["tiny-vlm-v2"], "the second tiny-vlm (LM frozen; its yes/no answers follow the question's wording), "
          "kept as shipped for the results of docs/results.md (`ttrl zoo build tiny-vlm-v2` retrains it)")
_register(TOWERS["tiny-vlm-v1"], "the first tiny-vlm (16x16 patches; shape questions at chance), kept as shipped "
          "for the answer-prior collapse study (`ttrl zoo build tiny-vlm-v1` retrains it)")
