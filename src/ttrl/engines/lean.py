"""A lean sampling loop for Hugging Face decoder models: the rollout engine behind `decoder: lean`.

What it does that `model.generate(prompt repeated N times)` does not:
- one prefill per unique prompt (images encoded once), its KV cache then repeated for the N samples;
- finished rows leave the batch (their cache rows are dropped once enough of them have finished);
- per-token statistics (log-prob of the sampled token, entropy, self-certainty) come from the logits the
  sampler already has, with no second pass and no [B, T, V] tensor;
- the KV cache is preallocated for the whole budget and written in place (the stock cache concatenates,
  copying every layer's keys and values at every token);
- no logits processors, stopping criteria or generation-config machinery per token.
Sampling is softmax(z / T) with optional nucleus filtering, from a seeded generator: same seed, same samples.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

from .base import Decoded, DecodeRows, Engine, SampleOptions, pick, positions, register_engine, token_stats


class _PreallocatedLayer(DynamicLayer):
    """A cache layer with room for the whole token budget: update writes in place and hands attention a
    view of the filled prefix, so a decoded token costs O(1) cache work instead of a full copy."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int):
        super().__init__()
        self.dtype, self.device = keys.dtype, keys.device
        self._k = keys.new_zeros(*keys.shape[:2], capacity, keys.shape[-1])
        self._v = values.new_zeros(*values.shape[:2], capacity, values.shape[-1])
        self._n = keys.shape[-2]
        self._k[:, :, :self._n], self._v[:, :, :self._n] = keys, values
        self.is_initialized = True
        self._expose()

    def _expose(self) -> None:
        self.keys, self.values = self._k[:, :, :self._n], self._v[:, :, :self._n]

    def update(self, key_states, value_states, *args, **kwargs):
        t = key_states.shape[-2]
        self._k[:, :, self._n:self._n + t], self._v[:, :, self._n:self._n + t] = key_states, value_states
        self._n += t
        self._expose()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._k, self._v = self._k[indices], self._v[indices]
        self._expose()


def preallocate(cache, extra: int) -> None:
    """Swap the plain dynamic layers of a filled cache for preallocated ones with `extra` free slots
    (sliding-window and other special layers keep their own kind)."""
    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer and layer.is_initialized and layer.keys.numel():
            cache.layers[i] = _PreallocatedLayer(layer.keys, layer.values, layer.keys.shape[-2] + extra)


@torch.no_grad()
def sample(model, inputs: dict, n: int, *, temperature: float | None, top_p: float, max_new_tokens: int,
           eos_ids: set[int], seed: int, want_stats: bool = False, prune_fraction: float = 0.25) -> Decoded:
    """n continuations of each of the P left-padded prompts in `inputs` (input_ids, attention_mask and
    any image tensors); rows come back prompt-major: prompt 0's n samples, then prompt 1's, ...

    prune_fraction: finished rows are dropped from the batch (a copy of the cache) once they make up
    this share of it; dropping at every finish would copy the cache more often than it saves."""
    mask = inputs["attention_mask"]
    device = mask.device
    pos = positions(mask)
    out = model(**inputs, position_ids=pos, use_cache=True, logits_to_keep=1)
    cache, logits = out.past_key_values, out.logits[:, -1]
    if n > 1:
        cache.batch_repeat_interleave(n)
        logits, mask, pos = (t.repeat_interleave(n, dim=0) for t in (logits, mask, pos))
    preallocate(cache, max_new_tokens)
    width = mask.shape[1]
    mask = torch.cat([mask, mask.new_ones(mask.shape[0], max_new_tokens)], dim=-1)  # sliced as tokens arrive
    rows = mask.shape[0]
    next_pos = pos[:, -1] + 1
    generator = None if temperature is None else torch.Generator(device=device).manual_seed(seed)
    eos = torch.tensor(sorted(eos_ids), device=device)

    book = DecodeRows(rows, max_new_tokens, device, want_stats, prune_fraction)
    for t in range(max_new_tokens):
        tok = pick(logits, temperature, top_p, generator)
        if book.record(t, tok, eos, lambda live, z=logits, k=tok: token_stats(z[live], k[live], temperature)) \
                or t == max_new_tokens - 1:
            break
        keep = book.prune()
        if keep is not None:
            cache.batch_select_indices(keep)
            tok, mask, next_pos = tok[keep], mask[keep], next_pos[keep]
        out = model(input_ids=tok[:, None], attention_mask=mask[:, :width + t + 1], position_ids=next_pos[:, None],
                    past_key_values=cache, use_cache=True)
        cache, logits = out.past_key_values, out.logits[:, -1]
        next_pos = next_pos + 1
    return book.decoded()


def _lean_fits(backend) -> str | None:
    if not backend.plain_positions:
        return (f"the lean loop needs plain 1-D positions after the prefill; {backend.model_type!r} has its own "
                "(use decoder hf or auto)")
    return None


@register_engine("lean", supports=_lean_fits,
                 help="shared prefill, preallocated KV cache, finished rows leave the batch (text models, LLaVA-type VLMs)")
class LeanEngine(Engine):
    def session(self):
        return self.backend.sampling_weights()

    def sample(self, prompts, n: int, opts: SampleOptions):
        enc = self.backend.encode(prompts).to(self.backend.device)
        dec = sample(self.backend.model, dict(enc), n, temperature=opts.temperature, top_p=opts.top_p,
                     max_new_tokens=opts.max_new_tokens, eos_ids=opts.eos_ids, seed=opts.seed,
                     want_stats=opts.want_stats)
        prompt_ids = [tuple(row[m.bool()].tolist()) for row, m in zip(enc["input_ids"], enc["attention_mask"])]
        return dec.samples(prompt_ids, n)
