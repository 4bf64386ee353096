"""Whisper decoding for the speech backend: the forced decoder prompt, the tokens Whisper never emits, a sampling
loop that runs the decoder prompt once per clip (its cross-attention keys and values, the costly part, are then
shared by the n samples), and teacher-forced logits of completions for the update.

The policy is Whisper as its own `generate` decodes it: softmax(z / T) over the logits with the generation config's
`suppress_tokens` (always) and `begin_suppress_tokens` (first new token) removed. Sampling and scoring apply the same
mask, so a sampled token's log-prob is the same number in both.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..config import ConfigError
from ..engines.base import Decoded, DecodeRows, SampleOptions, pick
from ..rollout import Completion


def decoder_prompt(generation_config, language: str) -> list[int]:
    """<|startoftranscript|> [<|lang|> <|transcribe|>] <|notimestamps|>: language and task only for multilingual
    models (English-only checkpoints have no such tokens in their prompt), as Whisper's generate builds it."""
    g = generation_config
    try:
        ids = [g.decoder_start_token_id]
        if getattr(g, "is_multilingual", False):
            lang = language if language.startswith("<|") else f"<|{language}|>"
            if lang not in g.lang_to_id:
                raise ConfigError(f"language {language!r} is not one of the model's: {', '.join(sorted(g.lang_to_id))}")
            ids += [g.lang_to_id[lang], g.task_to_id["transcribe"]]
        ids.append(g.no_timestamps_token_id)
    except AttributeError as e:
        raise ConfigError(f"the Whisper model's generation_config.json lacks a field its decoder prompt needs ({e})") from None
    if any(i is None for i in ids):
        raise ConfigError(f"the Whisper model's generation_config.json leaves a decoder prompt token unset: {ids}")
    return ids


class Suppression:
    """The logit mask of Whisper's generate: `always` on every step, `first` on the first new token as well."""

    def __init__(self, generation_config, vocab_size: int, device):
        def mask(ids):
            m = torch.zeros(vocab_size, dtype=torch.bool, device=device)
            ids = [i for i in (ids or []) if 0 <= i < vocab_size]
            m[ids] = True
            return m

        self.always = mask(generation_config.suppress_tokens)
        self.first = self.always | mask(generation_config.begin_suppress_tokens)

    def step(self, logits: torch.Tensor, first: bool) -> torch.Tensor:
        """Raw logits [B, V] of one step with the suppressed tokens at -inf."""
        return logits.masked_fill(self.first if first else self.always, float("-inf"))

    def sequence(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, V] of completions from their first token on, masked as the sampler masked them."""
        m = self.always.expand(logits.shape[1], -1).clone()
        m[0] = self.first
        return logits.masked_fill(m, float("-inf"))


def masked_token_stats(z: torch.Tensor, tokens: torch.Tensor, temperature: float | None) -> tuple[torch.Tensor, ...]:
    """engines.base.token_stats of softmax(z / T) whose suppressed tokens (-inf) are outside the support: their
    0 * log 0 terms of the entropy are 0, and self-certainty is KL(uniform over the support || p)."""
    logp = torch.log_softmax(z.float() / (temperature or 1.0), dim=-1)
    chosen = logp.gather(-1, tokens[:, None]).squeeze(-1)
    p = logp.exp()
    entropy = -torch.special.xlogy(p, p).sum(-1)
    support = torch.isfinite(logp)
    size = support.sum(-1)
    certainty = -torch.where(support, logp, 0.0).sum(-1) / size - size.float().log()
    return chosen, entropy, certainty


@torch.no_grad()
def sample(model, enc: torch.Tensor, prompt: list[int], n: int, opts: SampleOptions, suppress: Suppression,
           prune_fraction: float = 0.25) -> Decoded:
    """n transcripts of each of the P clips whose encoder states are `enc` [P, S, D], rows prompt-major.
    `model` is the plain WhisperForConditionalGeneration (LoRA layers inside it act).
    prune_fraction: finished rows leave the batch once they make up this share of it (engines/lean.py)."""
    device = enc.device
    ids = torch.tensor([prompt] * enc.shape[0], device=device)
    out = model(encoder_outputs=(enc,), decoder_input_ids=ids, use_cache=True)
    cache, logits = out.cache, out.logits[:, -1]
    if n > 1:
        cache.batch_repeat_interleave(n)
        logits = logits.repeat_interleave(n, dim=0)
    rows = logits.shape[0]
    generator = None if opts.temperature is None else torch.Generator(device=device).manual_seed(opts.seed)
    eos = torch.tensor(sorted(opts.eos_ids), device=device)
    steps = opts.max_new_tokens
    book = DecodeRows(rows, steps, device, opts.want_stats, prune_fraction)
    for t in range(steps):
        z = suppress.step(logits, first=t == 0)
        tok = pick(z, opts.temperature, opts.top_p, generator)
        if book.record(t, tok, eos, lambda live, z=z, k=tok: masked_token_stats(z[live], k[live], opts.temperature)) \
                or t == steps - 1:
            break
        keep = book.prune()
        if keep is not None:
            cache.batch_select_indices(keep)
            tok = tok[keep]
        # cross-attention reads its keys/values from the cache from here on; the states only need the batch shape
        states = enc[:1].expand(len(book.alive), -1, -1)
        out = model(encoder_outputs=(states,), decoder_input_ids=tok[:, None], cache=cache, use_cache=True)
        cache, logits = out.cache, out.logits[:, -1]
    return book.decoded()


def completion_logits(model, enc: torch.Tensor, completions: Sequence[Completion], owner: list[int], pad_id: int):
    """(logits [B, Lc, V] predicting each completion token, targets [B, Lc], mask [B, Lc]) by teacher forcing:
    the decoder prompt of each distinct clip (enc [U, S, D], `owner[b]` = completion b's clip) runs once, its
    cache (self- and cross-attention, carrying gradients) gathered for the completions of that clip."""
    device = enc.device
    firsts = {}
    for b, o in enumerate(owner):
        firsts.setdefault(o, b)
    prompts = {len(completions[b].prompt_ids) for b in firsts.values()}
    if len(prompts) != 1:
        raise ValueError(f"completions of one batch must share the decoder prompt length, got {sorted(prompts)}")
    pids = torch.tensor([completions[firsts[u]].prompt_ids for u in range(enc.shape[0])], device=device)
    out = model(encoder_outputs=(enc,), decoder_input_ids=pids, use_cache=True)
    rows = torch.tensor(owner, device=device)
    cache = out.cache
    cache.batch_select_indices(rows)  # differentiable gather: gradients reach the prompt pass
    lc = max(max(len(c.ids) for c in completions), 1)
    cids = torch.full((len(completions), lc), pad_id, dtype=torch.long)
    cmask = torch.zeros(len(completions), lc, dtype=torch.bool)
    for b, c in enumerate(completions):
        cids[b, :len(c.ids)] = torch.tensor(c.ids, dtype=torch.long)
        cmask[b, :len(c.ids)] = True
    cids, cmask = cids.to(device), cmask.to(device)
    states = enc[:1].expand(len(completions), -1, -1)  # cross-attention keys/values come from the cache
    rest = model(encoder_outputs=(states,), decoder_input_ids=cids, cache=cache, use_cache=True).logits
    logits = torch.cat([out.logits[rows, -1:], rest[:, :-1]], dim=1)  # the prompt's last logit predicts token 0
    return logits, cids, cmask
