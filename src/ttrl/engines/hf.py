"""transformers' `generate` as a rollout engine: the fallback for models the lean loop does not cover
(Qwen2-VL's 3-D positions, encoder-decoder models, anything exotic)."""
from __future__ import annotations

import torch

from .base import Decoded, Engine, SampleOptions, register_engine, token_stats


@register_engine("hf", help="transformers generate on a clean GenerationConfig (any model generate supports)")
class HFEngine(Engine):
    def session(self):
        return self.backend.sampling_weights()

    def sample(self, prompts, n: int, opts: SampleOptions):
        from transformers import GenerationConfig

        b = self.backend
        torch.manual_seed(opts.seed)  # generate draws from the global generator
        # each prompt repeated n times (rather than num_return_sequences) keeps images aligned
        enc = b.encode([p for p in prompts for _ in range(n)]).to(b.device)
        sampling = dict(do_sample=False) if opts.temperature is None else dict(
            do_sample=True, temperature=opts.temperature, top_p=opts.top_p, top_k=0)
        config = GenerationConfig(**sampling, max_new_tokens=opts.max_new_tokens, eos_token_id=sorted(opts.eos_ids),
                                  pad_token_id=b.tokenizer.pad_token_id, output_logits=opts.want_stats,
                                  return_dict_in_generate=True)
        # generate fills every field left unset from the model's own generation_config (repetition_penalty,
        # min_p, top_k, suppress_tokens, ...): hidden for this call, so the samples come from softmax(z / T)
        # exactly as token_logprobs scores them and the on-policy ratio of 1 holds
        base = b.model.get_base_model() if hasattr(b.model, "get_base_model") else b.model
        own, base.generation_config = base.generation_config, GenerationConfig()
        try:
            gen = b.model.generate(**enc, generation_config=config)
        finally:
            base.generation_config = own
        new = gen.sequences[:, enc["input_ids"].shape[1]:]
        stats = _token_stats(gen.logits, new, opts.temperature) if opts.want_stats else None
        tokens, finished, rows_stats = [], [], []
        for r in range(new.shape[0]):
            ids, done = _cut(new[r].tolist(), opts.eos_ids)
            tokens.append(ids)
            finished.append(done)
            rows_stats.append(None if stats is None else tuple(a[r, :len(ids)] for a in stats))
        prompt_ids = [tuple(enc["input_ids"][i * n][enc["attention_mask"][i * n].bool()].tolist())
                      for i in range(len(prompts))]
        return Decoded(tokens, finished, rows_stats if stats is not None else None).samples(prompt_ids, n)


def _cut(row: list[int], eos_ids) -> tuple[list[int], bool]:
    for j, t in enumerate(row):
        if t in eos_ids:
            return row[:j + 1], True  # keep EOS: the policy learns when to stop
    return row, False


def _token_stats(step_logits, tokens: torch.Tensor, temperature: float | None):
    """(logprob of sampled token, entropy, self-certainty) arrays [B, T] of softmax(z / T) from the raw per-step
    logits that generate returns, one step at a time so no [B, T, V] tensor is built."""
    steps = [token_stats(logits, tokens[:, t], temperature) for t, logits in enumerate(step_logits)]
    return [torch.stack(col, dim=1).cpu().numpy() for col in zip(*steps)]
