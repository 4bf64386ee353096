"""The vision backend: Hugging Face image-text-to-text models (LLaVA, Qwen2-VL / Qwen2.5-VL, SmolVLM,
InternVL in HF format, and the bundled tiny-vlm): AutoProcessor + AutoModelForImageTextToText.

Everything but loading, prompt content and image inputs is the causal backend's (causal.py).
LoRA adapts the language model; the vision tower stays frozen unless `train_vision` is set."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from ..data import Query
from ..media import load_image
from ..prompting import user_message
from ..rollout import Completion, Prompt
from .base import register_backend
from .causal import CausalBackend

# module-name parts of the vision side across HF families (LLaVA, Qwen2-VL, SmolVLM/Idefics3, InternVL)
VISION_PARTS = ("vision_tower", "visual", "vision_model", "multi_modal_projector", "mm_projector", "connector",
                "mlp1")


# families whose language model uses plain 1-D positions after the prefill, so the lean decode loop
# fits; others (Qwen2-VL's 3-D M-RoPE positions, ...) sample with transformers' generate
LEAN_DECODE_TYPES = ("llava",)


@register_backend("vision", help="image-text-to-text models (AutoModelForImageTextToText: LLaVA, Qwen2-VL, SmolVLM, "
                  "InternVL-HF, tiny-vlm)", priority=0,
                  detect=lambda config: getattr(config, "vision_config", None) is not None)
class VisionBackend(CausalBackend):
    modalities = frozenset({"image"})
    _cache_size = 512  # decoded images kept for re-scoring completions

    @property
    def plain_positions(self) -> bool:
        return self.model_type in LEAN_DECODE_TYPES

    def check(self, query: Query) -> None:
        for path in query.images:
            self._image(path)

    def _load_tokenizer(self, path):
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(path)
        self._images: OrderedDict[str, object] = OrderedDict()
        return self.processor.tokenizer

    def _load_model(self, path):
        from transformers import AutoModelForImageTextToText

        return AutoModelForImageTextToText.from_pretrained(path, dtype=self.dtype)

    def _lora_exclude(self) -> str:
        return r".*(" + "|".join(VISION_PARTS) + r").*"

    def _freeze(self, model) -> None:
        if self.cfg.train_vision:  # LoRA on the language model, plus the whole vision side
            for name, p in model.named_parameters():
                if any(part in name for part in VISION_PARTS) and "lora_" not in name:
                    p.requires_grad_(True)

    def _user_content(self, query: Query, instruction: str):
        return [{"type": "image"} for _ in query.images] + [{"type": "text", "text": user_message(query, instruction)}]

    def _image(self, path: str):
        im = self._images.get(path)
        if im is None:
            im = self._images[path] = load_image(path)
            if len(self._images) > self._cache_size:
                self._images.popitem(last=False)
        return im

    def encode(self, prompts: Sequence[Prompt]):
        images = [self._image(p) for pr in prompts for p in pr.images]
        return self.processor(text=[p.text for p in prompts], images=images or None, return_tensors="pt",
                              padding=True)

    def model_inputs(self, completions: Sequence[Completion]) -> dict:
        images = [self._image(p) for c in completions for p in c.images]
        if not images:
            return {}
        px = self.processor.image_processor(images, return_tensors="pt")
        return {k: v.to(self.device) for k, v in px.items()}
