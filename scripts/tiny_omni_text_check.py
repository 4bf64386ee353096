"""Check for tiny-omni's route (a) (docs/op_ttrav.md): SmolLM2-135M-Instruct's weights in Qwen2.5-Omni's thinker text
model (a Qwen2 decoder: zero q/k/v biases, M-RoPE with time = height = width positions for text, an untied copy
of the head) give SmolLM2's own logits on a chat prompt. Prints the largest absolute logit difference.

    PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/tiny_omni_text_check.py
"""
from __future__ import annotations

import json

import torch

from ttrl.zoo import resolve_model


def smollm2_as_thinker_text(folder: str):
    """(Qwen2_5OmniThinkerTextModel, lm_head) holding SmolLM2's weights."""
    from safetensors.torch import load_file
    from transformers import AutoConfig
    from transformers.models.qwen2_5_omni.configuration_qwen2_5_omni import Qwen2_5OmniTextConfig
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniThinkerTextModel

    s = AutoConfig.from_pretrained(folder)
    half = s.head_dim // 2  # rotary frequencies per head, split into (time, height, width) bands
    cfg = Qwen2_5OmniTextConfig(
        vocab_size=s.vocab_size, hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
        num_hidden_layers=s.num_hidden_layers, num_attention_heads=s.num_attention_heads,
        num_key_value_heads=s.num_key_value_heads, rms_norm_eps=s.rms_norm_eps,
        max_position_embeddings=s.max_position_embeddings, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": s.rope_parameters["rope_theta"],
                         "mrope_section": [half // 2, half // 4, half - half // 2 - half // 4]})
    model = Qwen2_5OmniThinkerTextModel(cfg).eval()
    sd = {k[len("model."):]: v for k, v in load_file(folder + "/model.safetensors").items() if k.startswith("model.")}
    for name, p in model.named_parameters():  # the Qwen2 q/k/v biases SmolLM2 does not have
        if name.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")):
            sd[name] = torch.zeros_like(p)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"SmolLM2 does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    head = torch.nn.Linear(s.hidden_size, s.vocab_size, bias=False)
    head.weight.data = sd["embed_tokens.weight"].clone()  # SmolLM2 ties its head to the embeddings
    return model, head


def main() -> None:
    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_model("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(folder)
    ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    model, head = smollm2_as_thinker_text(folder)
    text = tok.apply_chat_template([{"role": "user", "content": "What colour is a ripe banana? Answer in one word."}],
                                   tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        want = ref(input_ids=ids).logits
        got = head(model(input_ids=ids).last_hidden_state)
    diff = float((want - got).abs().max())
    print(json.dumps({"tokens": ids.shape[1], "max_abs_logit_diff": diff,
                      "same_argmax": bool((want.argmax(-1) == got.argmax(-1)).all())}))


if __name__ == "__main__":
    main()
