"""The omni backend: models that hear and see, on transformers' Qwen2.5-Omni thinker
(Qwen2_5OmniThinkerForConditionalGeneration): audio + images (one or several, e.g. video frames in order) + text
in, text out. A local Qwen2.5-Omni-3B / 7B folder (the full model: its talker and token2wav weights are not
loaded) or a thinker-only folder is passed unchanged.

Inputs go through Qwen2.5-Omni's own processor logic (placeholder expansion, Whisper log-mel features, the
Qwen2-VL image grid); `OmniProcessor` is that processor without its video processor, which needs torchvision
and is not used here (frames are images). Positions are the thinker's 3-D M-RoPE, so sampling uses transformers'
generate (the hf engine) and scoring runs prompt + completion in one pass without position ids (the model
computes them from the token ids, the image grids and the audio lengths). LoRA adapts the language model; the
audio and vision encoders stay frozen. Everything else (chunks, seeds, adapter dropout, merged sampling weights,
the reference as the adapter switched off) is the causal backend's.
"""
from __future__ import annotations

import functools
import json
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch

from ..data import DataError, Query
from ..media import SAMPLE_RATE, load_audio
from ..prompting import user_message
from ..rollout import Completion, Prompt
from .base import register_backend
from .scoring import Scorer, checkpointed
from .vision import VisionBackend

OMNI_TYPES = ("qwen2_5_omni", "qwen2_5_omni_thinker")  # the full model's config and the thinker's own
ENCODERS = ("audio_tower", "visual")  # module-name parts of the thinker's frozen encoders
# Qwen2.5-Omni's marker tokens, used when a tokenizer does not name them itself
QWEN_TOKENS = {"image_token": "<|IMAGE|>", "audio_token": "<|AUDIO|>", "video_token": "<|VIDEO|>",
               "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
               "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"}

# Qwen2.5-Omni's chat template layout (ChatML; each audio and image part wrapped in its begin/end markers, which
# the processor expands and the thinker's M-RoPE reads), for folders built here (tests, tiny-omni)
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant."
    "<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'audio' %}{{ '<|audio_bos|><|AUDIO|><|audio_eos|>' }}"
    "{% elif part['type'] == 'image' %}{{ '<|vision_bos|><|IMAGE|><|vision_eos|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@functools.cache
def omni_processor_class():
    """The class, defined on first use (transformers is imported lazily, as by the other backends)."""
    from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import Qwen2_5OmniProcessor
    from transformers.processing_utils import OmniModalProcessorMixin

    class OmniProcessor(Qwen2_5OmniProcessor):
        """Qwen2.5-Omni's processor for text, images and audio: its tokenizer, Qwen2-VL image processor and Whisper
        feature extractor, and all of its call logic; no video processor (that one needs torchvision)."""

        def __init__(self, image_processor=None, feature_extractor=None, tokenizer=None, chat_template=None):
            OmniModalProcessorMixin.__init__(self, image_processor, feature_extractor, tokenizer,
                                             chat_template=chat_template)
            for name, token in QWEN_TOKENS.items():
                token = getattr(tokenizer, name, None) or token
                setattr(self, name, token)
                if name in ("image_token", "audio_token", "video_token"):
                    setattr(self, name + "_id", tokenizer.convert_tokens_to_ids(token))

        @property
        def model_input_names(self):
            return list(dict.fromkeys(self.tokenizer.model_input_names + self.feature_extractor.model_input_names
                                      + self.image_processor.model_input_names + ["feature_attention_mask"]))

    return OmniProcessor


def load_processor(path):
    """The folder's tokenizer, image processor, feature extractor and chat template as an OmniProcessor."""
    from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    template = tokenizer.chat_template
    for name in ("chat_template.jinja", "chat_template.json"):  # a processor's own template, beside the tokenizer's
        found = Path(path) / name
        if found.is_file():
            text = found.read_text()
            template = json.loads(text)["chat_template"] if name.endswith(".json") else text
            break
    return omni_processor_class()(image_processor=AutoImageProcessor.from_pretrained(path),
                                  feature_extractor=AutoFeatureExtractor.from_pretrained(path),
                                  tokenizer=tokenizer, chat_template=template)


def thinker_config(path):
    """The thinker's config: a full Qwen2.5-Omni folder nests it (thinker_config), a thinker folder is it."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    return config.thinker_config if config.model_type == "qwen2_5_omni" else config


class OmniScorer(Scorer):
    def full(self, model, completions):
        """Logits for each completion token from one pass over prompt + completion, positions left to the model
        (3-D M-RoPE from ids, image grids and audio lengths); the head runs on the completion's positions only."""
        pids, pmask = self._prompt_batch(completions)
        cids, cmask = self._completion_batch(completions)
        lc = cids.shape[1]
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        with checkpointed(model, self.b.cfg.gradient_checkpointing):
            hidden = base.model(input_ids=torch.cat([pids, cids], dim=1), attention_mask=torch.cat([pmask, cmask], dim=1),
                                use_cache=False, **self.b.model_inputs(completions)).last_hidden_state
        logits = base.lm_head(hidden[:, -(lc + 1):-1])
        return logits, cids, cmask.float()


@register_backend("omni", help="audio-visual models on the Qwen2.5-Omni thinker (Qwen2_5OmniThinkerForConditional"
                  "Generation: a Qwen2.5-Omni-3B/7B folder as released, or a thinker folder): audio + images + text in, "
                  "text out",
                  priority=20, detect=lambda config: getattr(config, "model_type", None) in OMNI_TYPES)
class OmniBackend(VisionBackend):
    modalities = frozenset({"image", "audio"})

    def __init__(self, cfg, need_reference: bool = True, seed: int = 0):
        self._clips: OrderedDict[str, object] = OrderedDict()
        super().__init__(cfg, need_reference=need_reference, seed=seed)
        self.scorer = OmniScorer(self)

    # -- loading -----------------------------------------------------------------------------
    def _load_tokenizer(self, path):
        self.processor = load_processor(path)
        self._images = OrderedDict()
        return self.processor.tokenizer

    def _load_model(self, path):
        from transformers import Qwen2_5OmniThinkerForConditionalGeneration

        return Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(path, config=thinker_config(path),
                                                                          dtype=self.dtype)

    def _lora_exclude(self) -> str:
        return r".*(" + "|".join(ENCODERS) + r").*"

    # -- inputs ------------------------------------------------------------------------------
    @property
    def max_seconds(self) -> float:
        """The feature extractor's window (Whisper's 30 s): longer audio would be cut without notice."""
        return self.processor.feature_extractor.n_samples / SAMPLE_RATE

    def check(self, query: Query) -> None:
        super().check(query)
        for path in query.audio:
            seconds = len(self._clip(path)) / SAMPLE_RATE
            if seconds > self.max_seconds:
                raise DataError(path, None, "audio", f"{seconds:.1f} s is longer than the audio encoder's "
                                f"{self.max_seconds:.0f} s window")

    def _clip(self, path: str):
        clip = self._clips.get(path)
        if clip is None:
            clip = self._clips[path] = load_audio(path)
            if len(self._clips) > self._cache_size:
                self._clips.popitem(last=False)
        return clip

    def _user_content(self, query: Query, instruction: str):
        return ([{"type": "audio"} for _ in query.audio] + [{"type": "image"} for _ in query.images]
                + [{"type": "text", "text": user_message(query, instruction)}])

    def render(self, query: Query, instruction: str) -> Prompt:
        p = super().render(query, instruction)
        return Prompt(p.text, p.images, tuple(query.audio))

    def _audio_features(self, clips) -> dict:
        """Log-mel features as the processor makes them (padded to the window, with their frame mask)."""
        out = self.processor.feature_extractor(clips, sampling_rate=SAMPLE_RATE, return_attention_mask=True,
                                               padding="max_length", return_tensors="pt")
        return {"input_features": out["input_features"], "feature_attention_mask": out["attention_mask"]}

    def encode(self, prompts: Sequence[Prompt]):
        images = [self._image(p) for pr in prompts for p in pr.images]
        clips = [self._clip(p) for pr in prompts for p in pr.audio]
        enc = self.processor(text=[p.text for p in prompts], images=images or None, audio=clips or None,
                             return_tensors="pt", padding=True)
        return enc.to(self.dtype)  # floating inputs (features, pixels) in the weights' dtype; ids stay integer

    def model_inputs(self, completions: Sequence[Completion]) -> dict:
        out = {}
        images = [self._image(p) for c in completions for p in c.images]
        if images:
            out.update(self.processor.image_processor(images, return_tensors="pt"))
        clips = [self._clip(p) for c in completions for p in c.audio]
        if clips:
            out.update(self._audio_features(clips))
        return {k: v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device) for k, v in out.items()}

    def close(self) -> None:
        super().close()
        self._clips.clear()
