"""tiny-janus: a small unified model (transformers' `JanusForConditionalGeneration`) that draws procedural scenes
as image tokens and answers yes/no questions about images, built locally for Meta-TTRL (issue 17).

No pretrained image generator installs without a hub download, so, like tiny-vlm, the model is grafted together:

* language model: SmolLM2-135M-Instruct (zoo "smollm2-135m"; by default only its first 12 layers, `text_layers`),
  vocabulary + `<image_placeholder>`, `<begin_of_image>`, `<end_of_image>`, SmolLM2's own ChatML template (the
  instruct model writes rubrics in the format it was tuned on; Janus-Pro uses its own template the same way);
  frozen, its generation skill is a LoRA merged into the weights at assembly;
* understanding encoder: `JanusVisionModel` (width 128, 2 layers, 8x8 patches: Janus ties its grid to the VQ
  grid, so a 48x48 image is 36 tokens) + the aligner to the LM width;
* VQ tokenizer: `JanusVQVAE` (codebook 512 x 8, l2-normalised codes as Janus decodes them, 3 downsamplings:
  48x48 pixels <-> a 6x6 token grid);
* generation embeddings / aligner / head: image token -> LM width -> image-token logits.

`tiny_janus_train.train` trains the small parts (VQ, then generation, then understanding) from a seed on scenes of
`scenes:train` only; their weights (and the LoRA factors) ship in zoo/assets, and `assemble` grafts them onto
SmolLM2 into a folder any Janus loader (the t2i backend) reads.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import asset_folder, load_parts, register_model, resolve_model, save_folder, save_parts
from .lora import LORA_PREFIX, merge_lora
from .tiny_vlm import chatml_template

ASSET = Path(__file__).parent / "assets" / "tiny_janus.safetensors"
CARD_NAME = "tiny_janus_card.json"
BUILD_VERSION = 1  # bumped when `assemble` writes something else, so cached folders are rebuilt
SPECIAL = {"image_token": "<image_placeholder>", "boi_token": "<begin_of_image>", "eoi_token": "<end_of_image>"}
TRAINED_PREFIXES = ("model.vision_model.", "model.aligner.", "model.vqmodel.", "model.generation_embeddings.",
                    "model.generation_aligner.", "model.generation_head.")
PIXEL_MEAN, PIXEL_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # Janus' image processor: pixels in [-1, 1]

# SmolLM2's ChatML turns; an image part is one `<image_placeholder>`, which the Janus processor expands to
# <begin_of_image> + num_image_tokens placeholders + <end_of_image>
CHAT_TEMPLATE = chatml_template("<image_placeholder>")


@dataclass(frozen=True)
class Arch:
    """The shapes of tiny-janus (docs/meta_ttrl.md, design); stored in the weights file so assembly rebuilds them."""

    image_size: int = field(default=48, metadata={
        "help": "image side in pixels (48: the checker passes 100% of drawn test scenes, 32: 93%; 64 costs 1.8x)"})
    vq_multipliers: tuple[int, ...] = field(default=(1, 1, 2, 2), metadata={
        "help": "VQ channel multipliers per level: len - 1 downsamplings (48 -> 6x6 = 36 tokens per image)"})
    vq_channels: int = field(default=32, metadata={"help": "VQ base channels (GroupNorm needs multiples of 32)"})
    codebook: int = field(default=512, metadata={"help": "VQ codebook size = image-token vocabulary"})
    code_dim: int = field(default=8, metadata={"help": "VQ code dimension (LlamaGen / Janus use 8)"})
    vision_width: int = field(default=128, metadata={"help": "understanding encoder width (tiny-vlm's tower)"})
    vision_layers: int = field(default=2, metadata={"help": "understanding encoder layers (tiny-vlm's tower)"})
    vq_window: int = field(default=0, metadata={
        "help": "VQ encoder input per token: 0 = the whole image (Janus); w = the token's own w x w neighbourhood, so "
                "codes are local and the generator can predict them (docs/meta_ttrl.md, session 19)"})
    text_layers: int = field(default=12, metadata={
        "help": "SmolLM2 layers kept (0 = all 30; 12: the first 12, 2.5x cheaper, so the build fits in an hour)"})

    @property
    def grid(self) -> int:
        return self.image_size // 2 ** (len(self.vq_multipliers) - 1)

    @property
    def patch(self) -> int:
        """Understanding patch side: Janus ties the encoder's grid to the VQ grid (JanusConfig sets the VQ's
        num_patches = image_size // patch_size), so 48x48 images in 8x8 patches give 36 understanding tokens."""
        return self.image_size // self.grid

    @property
    def understanding_tokens(self) -> int:
        return self.grid ** 2

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Arch:
        d = json.loads(text)
        return cls(**{**d, "vq_multipliers": tuple(d["vq_multipliers"])})


def _text_folder() -> Path:
    return Path(resolve_model("smollm2-135m"))


def tokenizer_and_processor(arch: Arch):
    from transformers import AutoTokenizer, JanusProcessor
    from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil

    tok = AutoTokenizer.from_pretrained(_text_folder(), extra_special_tokens=dict(SPECIAL), padding_side="left")
    tok.chat_template = CHAT_TEMPLATE
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    image_processor = JanusImageProcessorPil(size={"height": arch.image_size, "width": arch.image_size},
                                             min_size=arch.patch, image_mean=list(PIXEL_MEAN),
                                             image_std=list(PIXEL_STD))
    processor = JanusProcessor(image_processor, tok, chat_template=CHAT_TEMPLATE,
                               num_image_tokens=arch.understanding_tokens)
    return tok, processor


def janus_config(arch: Arch, tok):
    from transformers import AutoConfig, JanusConfig, JanusVisionConfig, JanusVQVAEConfig

    text = AutoConfig.from_pretrained(_text_folder())
    if arch.text_layers:
        text.num_hidden_layers = arch.text_layers
    text.vocab_size = len(tok)
    width = text.hidden_size
    vision = JanusVisionConfig(hidden_size=arch.vision_width, intermediate_size=4 * arch.vision_width,
                               num_hidden_layers=arch.vision_layers, num_attention_heads=4,
                               image_size=arch.image_size, patch_size=arch.patch, projection_dim=width,
                               num_image_tokens=arch.understanding_tokens)
    vq = JanusVQVAEConfig(embed_dim=arch.code_dim, num_embeddings=arch.codebook, latent_channels=arch.vq_channels,
                          base_channels=arch.vq_channels, channel_multiplier=list(arch.vq_multipliers),
                          num_res_blocks=1, num_patches=arch.grid, projection_dim=width, image_token_embed_dim=width,
                          num_hidden_layers=2, encode_window=arch.vq_window)  # read by tiny_janus_train.encode_z
    return JanusConfig(text_config=text, vision_config=vision, vq_config=vq,
                       image_token_id=tok.convert_tokens_to_ids(SPECIAL["image_token"]))


def _smollm_weights(arch: Arch) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    sd = {}
    for f in sorted(_text_folder().glob("*.safetensors")):
        sd.update(load_file(str(f)))
    out = {}
    for k, v in sd.items():
        if k.startswith("model.layers.") and arch.text_layers and int(k.split(".")[2]) >= arch.text_layers:
            continue
        if k.startswith("model."):
            out["model.language_model." + k[len("model."):]] = v.float()
    return out


def build(arch: Arch | None = None, trained: dict[str, torch.Tensor] | None = None, seed: int = 0):
    """(model float32 eval, processor): SmolLM2 in the Janus text model (new token rows = the mean embedding, so
    they are never generated by chance), the small parts from `trained` (None: seeded random init) and its LoRA
    factors merged into the LM."""
    from transformers import JanusForConditionalGeneration

    arch = arch or Arch()
    tok, processor = tokenizer_and_processor(arch)
    config = janus_config(arch, tok)
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(config).float()
    text = _smollm_weights(arch)
    emb = text["model.language_model.embed_tokens.weight"]
    extra = len(tok) - emb.shape[0]
    text["model.language_model.embed_tokens.weight"] = torch.cat([emb, emb.mean(0, keepdim=True).expand(extra, -1)])
    text["lm_head.weight"] = text["model.language_model.embed_tokens.weight"].clone()  # SmolLM2 ties them
    small = {k: v.float() for k, v in (trained or {}).items() if not k.startswith(LORA_PREFIX)}
    missing, unexpected = model.load_state_dict({**text, **small}, strict=False)
    missing = [k for k in missing if trained is not None or not k.startswith(TRAINED_PREFIXES)]
    if missing or unexpected:
        raise RuntimeError(f"weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    merge_lora(model, trained or {})
    gen = model.generation_config
    gen.bos_token_id, gen.pad_token_id, gen.eos_token_id = tok.bos_token_id, tok.pad_token_id, tok.eos_token_id
    gen.generation_kwargs = {"boi_token_id": tok.convert_tokens_to_ids(SPECIAL["boi_token"])}
    return model.eval(), processor


def save_weights(tensors: dict[str, torch.Tensor], arch: Arch, path: Path) -> None:
    save_parts(tensors, path, "ttrl tiny-janus small parts + generation LoRA", arch.to_json())


def load_weights(path: Path) -> tuple[dict[str, torch.Tensor], Arch]:
    tensors, arch_json = load_parts(path, TRAINED_PREFIXES + (LORA_PREFIX,), "tiny-janus' small parts and LoRA")
    return tensors, Arch.from_json(arch_json)


def assemble(out_dir: Path, weights: Path) -> Path:
    """Write a loadable Janus folder (model + processor) to `out_dir`, atomically."""
    tensors, arch = load_weights(weights)
    model, processor = build(arch, tensors)
    save_folder(Path(out_dir), model, processor)
    return Path(out_dir)


def _folder() -> str:
    return asset_folder("tiny-janus", ASSET, BUILD_VERSION)


@register_model("tiny-janus", folder=_folder, help="Janus-architecture SmolLM2-135M + a small VQ tokenizer, "
                "understanding encoder and generation head trained on procedural scenes (`ttrl zoo build tiny-janus`)")
def _build(out: Path) -> None:
    assemble(out, ASSET)
