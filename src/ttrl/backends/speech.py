"""The speech backend: Whisper (any Hugging Face WhisperForConditionalGeneration folder: the bundled whisper-base and
whisper-tiny-en, or openai/whisper-large-v3 on a GPU), audio in, transcript out.

An item's audio (16 kHz, media.load_audio) becomes log-mel features; the decoder prompt is Whisper's forced prefix
(<|startoftranscript|> [<|en|> <|transcribe|>] <|notimestamps|>), never the item's text. The encoder is frozen by
default, so its output for a clip is computed once (no grad) and reused by the n samples, the update and the
reference; LoRA adapts the decoder's attention (self and cross: q, k, v, out). Sampling and scoring are
speech_decode.py's; everything else (chunks, seeds, adapter dropout, merged sampling weights, the reference as
the adapter switched off) follows the causal backend.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections import OrderedDict
from collections.abc import Sequence

import torch

from ..config import ConfigError, ModelConfig
from ..data import DataError, Query
from ..engines.base import SampleOptions
from ..media import SAMPLE_RATE, load_audio
from ..rollout import Completion, Prompt
from ..seeds import derive
from ..zoo import resolve_model
from . import speech_decode as dec
from .base import autocast_ctx, pick_device, register_backend, resolve_dtypes
from .lora import adapter_dropout, attach_lora, sampling_weights

DECODER_ATTENTION = "q_proj,k_proj,v_proj,out_proj"  # in the decoder's self_attn and encoder_attn
ENCODER = r"(.*\.)?encoder\..*"  # the encoder's modules (not the decoder's encoder_attn)


@register_backend("speech", help="speech recognition models (WhisperForConditionalGeneration: whisper-tiny-en, "
                  "whisper-base, any HF Whisper folder)", priority=10,
                  detect=lambda config: getattr(config, "model_type", None) == "whisper")
class SpeechBackend:
    modalities = frozenset({"audio"})
    _cache_size = 32  # encoder outputs kept per clip (a step's clips are sampled, then scored)

    def __init__(self, cfg: ModelConfig, need_reference: bool = True, seed: int = 0):
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        if cfg.decoder != "auto":
            raise ConfigError(f"decoder {cfg.decoder!r}: the speech backend samples with its own Whisper loop "
                              "(encoder once per clip); use decoder auto")
        if cfg.gradient_checkpointing:
            raise ConfigError("gradient_checkpointing is not supported by the speech backend (its update keeps the "
                              "decoder prompt's cache); set it false")
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        self.dtype, self.autocast = resolve_dtypes(self.device, cfg.dtype, cfg.autocast)
        path = resolve_model(cfg.model)
        self.processor = WhisperProcessor.from_pretrained(path)
        self.tokenizer = self.processor.tokenizer
        net = WhisperForConditionalGeneration.from_pretrained(path, dtype=self.dtype).to(self.device).eval()
        self.model_type = net.config.model_type
        # the decoder's positions bound prompt + transcript; the session caps token budgets to it
        self.tokenizer.model_max_length = net.config.max_target_positions
        g = net.generation_config
        self.prompt_ids = dec.decoder_prompt(g, cfg.language)
        self.eos_ids = {g.eos_token_id} if isinstance(g.eos_token_id, int) else set(g.eos_token_id)
        self.suppress = dec.Suppression(g, net.config.vocab_size, self.device)
        self._ref_model = None
        self._ref_encoder = None
        if cfg.finetune == "lora":
            targets = DECODER_ATTENTION if cfg.lora_targets == "all-linear" else cfg.lora_targets
            model = attach_lora(net, dataclasses.replace(cfg, lora_targets=targets), ENCODER, derive(seed, "lora_init"))
        elif cfg.finetune == "full":
            model = net
            for p in net.model.encoder.parameters():
                p.requires_grad_(False)
            if need_reference:  # full fine-tuning has no adapter to switch off: keep a frozen copy
                self._ref_model = copy.deepcopy(net).eval().requires_grad_(False)
        else:
            raise ValueError(f"finetune must be lora or full, got {cfg.finetune!r}")
        if cfg.train_encoder:
            if need_reference:  # the reference reads the original encoder
                self._ref_encoder = copy.deepcopy(net.model.encoder).eval().requires_grad_(False)
            for p in net.model.encoder.parameters():
                p.requires_grad_(True)
        self.model, self.net = model, net  # peft wrapper (adapter, parameters); the Whisper model it adapts in place
        self._features: OrderedDict[str, torch.Tensor] = OrderedDict()

    # -- inputs ------------------------------------------------------------------------------
    def check(self, query: Query) -> None:
        """DataError naming the item's file: missing, empty, undecodable, silent, longer than Whisper's window."""
        if len(query.audio) != 1:
            raise DataError(query.id, None, "audio", f"a speech item needs exactly one audio file, got {len(query.audio)}")
        audio = load_audio(query.audio[0])
        window = self.processor.feature_extractor.chunk_length
        if len(audio) > window * SAMPLE_RATE:
            raise DataError(query.audio[0], None, "audio", f"{len(audio) / SAMPLE_RATE:.1f} s is longer than "
                            f"Whisper's {window} s window (long-form transcription is not supported)")

    def render(self, query: Query, instruction: str) -> Prompt:
        """The forced decoder prompt and the clip; the item's text prompt and the instruction are not used."""
        return Prompt(self.tokenizer.decode(self.prompt_ids), audio=tuple(query.audio[:1]))

    def prompt_length(self, query: Query, instruction: str) -> int:
        return len(self.prompt_ids)

    def _log_mel(self, paths: Sequence[str]) -> torch.Tensor:
        audio = [load_audio(p) for p in paths]
        feats = self.processor.feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        return feats.to(self.device, self.dtype)

    def encoder_states(self, paths: Sequence[str], reference: bool = False) -> torch.Tensor:
        """Encoder outputs [len(paths), S, D]: of the frozen encoder, cached per clip; of the trained encoder (when
        train_encoder) computed afresh with gradients as enabled."""
        if self.cfg.train_encoder and not reference:
            return self.net.model.encoder(self._log_mel(paths)).last_hidden_state
        encoder = self._ref_encoder if self._ref_encoder is not None else self.net.model.encoder
        missing = [p for p in dict.fromkeys(paths) if p not in self._features]
        if missing:
            with torch.no_grad(), autocast_ctx(self.device, self.autocast):
                states = encoder(self._log_mel(missing)).last_hidden_state
            for p, s in zip(missing, states):
                self._features[p] = s
        for p in paths:
            self._features.move_to_end(p)
        out = torch.stack([self._features[p] for p in paths])
        while len(self._features) > max(self._cache_size, len(paths)):
            self._features.popitem(last=False)
        return out

    # -- sampling ----------------------------------------------------------------------------
    def sampling_weights(self):
        return sampling_weights(self.model, self.cfg.merge_for_sampling,
                                self.autocast if self.cfg.cast_for_sampling else None)

    @torch.no_grad()
    def generate(self, prompts: Sequence[Prompt], n: int, *, temperature: float | None, top_p: float = 1.0,
                 max_new_tokens: int, batch_size: int, seed: int, token_stats: bool = False) -> list[list[Completion]]:
        for p in prompts:
            if not isinstance(p, Prompt) or len(p.audio) != 1:
                raise ValueError("the speech backend transcribes rendered prompts with one audio file each")
        per_chunk = max(1, batch_size // n)
        out: list[list[Completion]] = []
        with self.sampling_weights(), autocast_ctx(self.device, self.autocast):
            for k, start in enumerate(range(0, len(prompts), per_chunk)):
                chunk = prompts[start:start + per_chunk]
                opts = SampleOptions(temperature, top_p, max_new_tokens, frozenset(self.eos_ids),
                                     derive(seed, "chunk", k), token_stats)
                enc = self.encoder_states([p.audio[0] for p in chunk])
                rows = dec.sample(self.net, enc, self.prompt_ids, n, opts, self.suppress).samples(
                    [tuple(self.prompt_ids)] * len(chunk), n)
                for prompt, group in zip(chunk, rows):
                    out.append([Completion(r.prompt_ids, r.ids, self.tokenizer.decode(r.ids, skip_special_tokens=True),
                                           r.finished, r.stats, audio=prompt.audio) for r in group])
        return out

    def close(self) -> None:
        self._features.clear()

    # -- scoring -----------------------------------------------------------------------------
    def token_logprobs(self, completions: Sequence[Completion], *, temperature: float,
                       reference: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        net, ctx = self.net, torch.enable_grad()
        if reference:
            ctx = torch.no_grad()
            if self._ref_model is not None:
                net = self._ref_model
        lora_ref = reference and self._ref_model is None and hasattr(self.model, "disable_adapter")
        # LoRA dropout acts in the update's gradient pass only: sampling, reference and no-grad scoring stay exact
        dropout = adapter_dropout(self.model) if not reference and torch.is_grad_enabled() else contextlib.nullcontext()
        clips = list(dict.fromkeys(c.audio[0] for c in completions))
        owner = [clips.index(c.audio[0]) for c in completions]
        with ctx, autocast_ctx(self.device, self.autocast), dropout, \
                self.model.disable_adapter() if lora_ref else contextlib.nullcontext():
            enc = self.encoder_states(clips, reference=reference)
            logits, target, mask = dec.completion_logits(net, enc, completions, owner, min(self.eos_ids))
        logits = self.suppress.sequence(logits.float()) / temperature  # the sampled distribution, softmax(z / T)
        logp = torch.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
        # padding targets may be suppressed tokens (-inf): select rather than multiply by the mask
        return torch.where(mask, logp, torch.zeros_like(logp)), mask.float()

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def save(self, path) -> None:
        self.model.save_pretrained(path)
