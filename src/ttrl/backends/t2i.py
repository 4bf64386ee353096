"""The t2i backend: unified models on transformers' Janus classes (`JanusForConditionalGeneration`,
`JanusProcessor`), so a local Janus / Janus-Pro folder loads unchanged, and the bundled tiny-janus with it.

One model, two modes. Understanding mode is the vision backend's (vision.py): chat-templated prompts with
`<image_placeholder>` tokens filled by the SigLIP-style encoder, text from `lm_head`, LoRA, reference, text
generation (the rubric) and text scoring are inherited. Generation mode is this file's: the language model
continues the prompt + `<begin_of_image>` with image tokens predicted by `generation_head`, each fed back
through `generation_embeddings` + `generation_aligner`; the VQ decoder turns the token grid into pixels.
The methods a text-to-image protocol uses are `UnifiedImageModel`'s (unified.py).

Classifier-free guidance and the distribution the update scores
----------------------------------------------------------------
Each image token is drawn from softmax(z / T) with the guided logits

    z = u + w (c - u)

where c are the generation head's logits given the prompt, u those given the unconditional prompt (the same
positions with every token but BOS and BOI replaced by the pad token, attended as in Janus and transformers'
`generate`), and w the guidance scale. The GRPO update scores exactly this distribution: `image_token_logprobs`
runs both branches (the adapter active in both, gradients through both) and returns log softmax(z / T) of the
sampled tokens. Why: the policy that produced and was rewarded for the images is the guided sampler, so scoring it
keeps the on-policy importance ratio exactly 1 and the KL to the reference (the same guided sampler with the
adapter off) on the distribution that made the images; scoring c alone would optimise a different policy than
the one sampled (at w = 5 the two differ a lot) and need an importance correction. The price: scoring, like
sampling, runs the language model on twice the rows. With w = 1, z = c and the unconditional branch is skipped.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from ..data import DataError, Query
from ..engines.base import positions
from ..seeds import derive
from .base import autocast_ctx, register_backend
from .lora import adapter_dropout
from .unified import ImageGenOptions, ImageSample
from .vision import VISION_PARTS, VisionBackend

# Janus module names that stay out of LoRA: the understanding encoder and its aligner, the VQ tokenizer, and the
# generation embeddings / aligner / head (the adapter lives in the language model, shared by both modes)
JANUS_FROZEN = VISION_PARTS + ("aligner", "vqmodel", "generation_")
YES_WORDS = ("Yes", " Yes", "yes", " yes")
NO_WORDS = ("No", " No", "no", " no")


def image_prompt_ids(processor, prompt: str) -> tuple[int, ...]:
    """The generation prompt: the user turn through the chat template, then `<begin_of_image>`."""
    text = prompt
    if getattr(processor, "chat_template", None):
        messages = [{"role": "user", "content": [{"type": "text", "text": prompt}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = processor(text=[text], generation_mode="image", return_tensors="pt")
    return tuple(enc["input_ids"][0][enc["attention_mask"][0].bool()].tolist())


def left_padded(prompt_ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [B, P] left-padded with pad_id, and the attention mask."""
    p = max(len(x) for x in prompt_ids)
    ids = torch.full((len(prompt_ids), p), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, x in enumerate(prompt_ids):
        ids[b, p - len(x):] = torch.tensor(list(x))
        mask[b, p - len(x):] = 1
    return ids, mask


def unconditional(ids: torch.Tensor, mask: torch.Tensor, pad_id: int, keep: Sequence[int | None]) -> torch.Tensor:
    """The unconditional prompt of classifier-free guidance: every attended token but those in `keep` (BOS and BOI)
    replaced by pad, as transformers' Janus `generate` builds it (and tiny-janus trains on it)."""
    kept = torch.zeros_like(mask, dtype=torch.bool)
    for k in keep:
        if k is not None:
            kept |= ids == k
    return ids.masked_fill(~kept & mask.bool(), pad_id)


def _is_janus(config) -> bool:
    return getattr(config, "model_type", None) == "janus"


@register_backend("t2i", help="unified text-to-image + understanding models (Janus / Janus-Pro, tiny-janus): image "
                  "tokens with classifier-free guidance, yes/no introspection", priority=10, detect=_is_janus)
class JanusBackend(VisionBackend):
    def __init__(self, cfg, need_reference: bool = True, seed: int = 0, options: ImageGenOptions | None = None):
        self.options = options or ImageGenOptions()
        super().__init__(cfg, need_reference, seed)
        base = self._base(self.model)
        grid = base.model.vqmodel.quantize.quant_state_dims
        self.num_image_tokens = int(grid[0] * grid[1])
        vq = base.config.vq_config
        self.image_size = int(grid[0] * 2 ** (len(vq.channel_multiplier) - 1))  # the decoder upsamples per level
        tok = self.tokenizer
        self.boi_id = tok.convert_tokens_to_ids(self.processor.image_start_token)
        gen = base.generation_config
        self.bos_id = gen.bos_token_id if gen.bos_token_id is not None else tok.bos_token_id
        self.pad_id = gen.pad_token_id if gen.pad_token_id is not None else tok.pad_token_id
        self.yes_ids, self.no_ids = self._answer_ids(YES_WORDS), self._answer_ids(NO_WORDS)

    # -- loading -----------------------------------------------------------------------------------
    def _load_model(self, path):
        from transformers import JanusForConditionalGeneration

        return JanusForConditionalGeneration.from_pretrained(path, dtype=self.dtype)

    def _lora_exclude(self) -> str:
        return r".*(" + "|".join(JANUS_FROZEN) + r").*"

    @staticmethod
    def _base(model):
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _answer_ids(self, words) -> list[int]:
        """Single-token spellings of an answer word (with and without a leading space, capitalised or not)."""
        ids = sorted({i[0] for w in words for i in [self.tokenizer.encode(w, add_special_tokens=False)] if len(i) == 1})
        if not ids:
            raise ValueError(f"the tokenizer has no single token for any of {words}")
        return ids

    # -- generation mode -------------------------------------------------------------------------
    def image_prompt_ids(self, prompt: str) -> tuple[int, ...]:
        return image_prompt_ids(self.processor, prompt)

    def _prompt_rows(self, prompt_ids: Sequence[tuple[int, ...]], guided: bool):
        """Left-padded prompt ids, mask [R, P], R = B (conditional) + B (unconditional) with guidance."""
        ids, mask = left_padded(prompt_ids, self.pad_id)
        if guided:
            uncond = unconditional(ids, mask, self.pad_id, (self.boi_id, self.bos_id))
            ids, mask = torch.cat([ids, uncond]), torch.cat([mask, mask])
        return ids.to(self.device), mask.to(self.device)

    def _guided_logp(self, base, hidden: torch.Tensor, rows: int, guided: bool) -> torch.Tensor:
        """log softmax(z / T) from last hidden states [R, ..., D] (R = 2 * rows with guidance)."""
        logits = base.model.generation_head(hidden).float()
        if guided:
            c, u = logits[:rows], logits[rows:]
            logits = u + self.options.guidance * (c - u)
        return torch.log_softmax(logits / self.options.temperature, dim=-1)

    @torch.no_grad()
    def generate_images(self, prompts: Sequence[str], n: int, *, seed: int, greedy: bool = False) -> list[list[ImageSample]]:
        """n images per prompt; chunk k draws from torch.Generator(derive(seed, "image_chunk", k)), so the same
        seed gives the same images. Greedy takes the guided argmax (its recorded log-prob is still log softmax(z/T))."""
        rows = [(p, self.image_prompt_ids(p)) for p in prompts for _ in range(n)]
        out: list[ImageSample] = []
        bs = max(1, self.options.batch_size)
        with self.sampling_weights(), autocast_ctx(self.device, self.autocast):
            for k, start in enumerate(range(0, len(rows), bs)):
                chunk = rows[start:start + bs]
                gen = torch.Generator(device=self.device).manual_seed(derive(seed, "image_chunk", k))
                tokens, logps = self._sample_chunk([ids for _, ids in chunk], gen, greedy)
                out.extend(ImageSample(p, ids, tuple(t), lp) for (p, ids), t, lp in
                           zip(chunk, tokens.tolist(), logps.cpu().numpy()))
        return [out[i * n:(i + 1) * n] for i in range(len(prompts))]

    def _sample_chunk(self, prompt_ids, gen: torch.Generator, greedy: bool):
        from transformers.cache_utils import DynamicCache

        base = self._base(self.model)
        lm = base.model.language_model
        guided = self.options.guidance != 1.0
        b = len(prompt_ids)
        ids, mask = self._prompt_rows(prompt_ids, guided)
        pos = positions(mask)
        cache = DynamicCache(config=lm.config)
        out = lm(inputs_embeds=base.get_input_embeddings()(ids), attention_mask=mask, position_ids=pos,
                 past_key_values=cache, use_cache=True)
        tokens = torch.zeros(b, self.num_image_tokens, dtype=torch.long, device=self.device)
        logps = torch.zeros(b, self.num_image_tokens, device=self.device)
        for i in range(self.num_image_tokens):
            logp = self._guided_logp(base, out.last_hidden_state[:, -1], b, guided)
            tok = logp.argmax(-1) if greedy else torch.multinomial(logp.exp(), 1, generator=gen).squeeze(-1)
            tokens[:, i], logps[:, i] = tok, logp.gather(-1, tok[:, None]).squeeze(-1)
            if i + 1 == self.num_image_tokens:
                break
            fed = torch.cat([tok, tok]) if guided else tok  # both branches continue with the sampled token
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            pos = pos[:, -1:] + 1
            out = lm(inputs_embeds=base.prepare_embeddings_for_image_generation(fed[:, None]), attention_mask=mask,
                     position_ids=pos, past_key_values=cache, use_cache=True)
        return tokens, logps

    def image_token_logprobs(self, samples: Sequence[ImageSample], *,
                             reference: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(logp [B, N], mask [B, N]) of the samples' image tokens under the guided distribution they were drawn
        from (module docstring): the policy with gradients, or the reference (adapter off) without. One
        teacher-forced pass over prompt + image tokens per row, both guidance branches in one batch."""
        model, grad = self.model, torch.enable_grad()
        if reference:
            grad = torch.no_grad()
            if self._ref_model is not None:
                model = self._ref_model
        lora_ref = reference and self._ref_model is None and hasattr(self.model, "disable_adapter")
        dropout = adapter_dropout(self.model) if not reference and torch.is_grad_enabled() else contextlib.nullcontext()
        with grad, autocast_ctx(self.device, self.autocast), dropout, \
                self.model.disable_adapter() if lora_ref else contextlib.nullcontext():
            base = self._base(model)
            guided = self.options.guidance != 1.0
            ids, mask = self._prompt_rows([s.prompt_ids for s in samples], guided)
            tok = torch.tensor([s.tokens for s in samples], dtype=torch.long, device=self.device)
            fed = torch.cat([tok, tok]) if guided else tok
            img = base.prepare_embeddings_for_image_generation(fed[:, :-1])
            emb = torch.cat([base.get_input_embeddings()(ids), img], dim=1)
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], tok.shape[1] - 1)], dim=1)
            hidden = base.model.language_model(inputs_embeds=emb, attention_mask=mask, position_ids=positions(mask),
                                               use_cache=False).last_hidden_state
            # the prompt's last position predicts image token 0; image token j's position predicts token j + 1
            logp = self._guided_logp(base, hidden[:, ids.shape[1] - 1:], len(samples), guided)
        chosen = logp.gather(-1, tok[..., None]).squeeze(-1)
        return chosen, torch.ones_like(chosen)

    @torch.no_grad()
    def decode(self, samples: Sequence[ImageSample]) -> list:
        """RGB PIL images from the VQ decoder (its output is in the image processor's normalised space)."""
        from PIL import Image

        base = self._base(self.model)
        tok = torch.tensor([s.tokens for s in samples], dtype=torch.long, device=self.device)
        px = base.decode_image_tokens(tok).float().cpu()  # [B, H, W, C]
        ip = self.processor.image_processor
        mean, std = torch.tensor(ip.image_mean), torch.tensor(ip.image_std)
        arr = ((px * std + mean).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        return [Image.fromarray(a) for a in arr]

    # -- understanding mode ----------------------------------------------------------------------
    @torch.no_grad()
    def yes_probability(self, images: Sequence, questions: Sequence[str], *, reference: bool = False) -> list[float]:
        """P(Yes) / (P(Yes) + P(No)) of the next token after each (image, question) prompt; P(Yes) sums the
        single-token spellings of yes ("Yes", " Yes", "yes", " yes"), P(No) likewise. Images are PIL images or
        paths."""
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images for {len(questions)} questions")
        if not images:
            return []
        pics = [self._image(im) if isinstance(im, str) else im.convert("RGB") for im in images]
        texts = [self.render(Query(f"yes-no/{i}", q, images=("image",)), self.options.yes_no_instruction).text
                 for i, q in enumerate(questions)]
        enc = self.processor(text=texts, images=pics, return_tensors="pt", padding=True).to(self.device)
        lora_ref = reference and self._ref_model is None and hasattr(self.model, "disable_adapter")
        model = self._ref_model if reference and self._ref_model is not None else self.model
        with autocast_ctx(self.device, self.autocast), \
                self.model.disable_adapter() if lora_ref else contextlib.nullcontext():
            logits = model(**enc, position_ids=positions(enc["attention_mask"]), logits_to_keep=1).logits[:, -1]
        p = torch.softmax(logits.float(), dim=-1)
        p_yes, p_no = p[:, self.yes_ids].sum(-1), p[:, self.no_ids].sum(-1)
        return (p_yes / (p_yes + p_no).clamp_min(1e-30)).tolist()

    def check(self, query: Query) -> None:
        """Text-to-image prompts carry no media; understanding prompts' images must open."""
        if not query.prompt.strip():
            raise DataError(query.id, None, "prompt", "a text-to-image prompt must not be empty")
        super().check(query)
