"""Whisper from the wheels: the CTranslate2 reader, the weight mapping, and (slow) real transcription."""
import struct
from pathlib import Path

import numpy as np
import pytest

from ttrl.zoo import whisper as W

CLIP = Path(__file__).parent / "data" / "speech" / "sense_and_sensibility_0890.flac"
TRANSCRIPT = (CLIP.parent / "sense_and_sensibility_0890.txt").read_text().strip()


def ct2_bytes(variables, aliases=(), version=6):
    """A CTranslate2 model.bin laid out as ctranslate2's specs/model_spec.py writes it."""
    def s(x):
        b = x.encode()
        return struct.pack("<H", len(b) + 1) + b + b"\0"

    ids = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.float16): 4}
    out = struct.pack("<I", version) + s("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", len(variables))
    for name, a in variables.items():
        out += s(name) + struct.pack("<B", a.ndim) + b"".join(struct.pack("<I", d) for d in a.shape)
        out += struct.pack("<BI", ids[a.dtype], a.nbytes) + a.tobytes()
    out += struct.pack("<I", len(aliases)) + b"".join(s(a) + s(t) for a, t in aliases)
    return out


def test_reader_on_a_handmade_file():
    w = np.arange(6, dtype=np.float16).reshape(2, 3)
    data = ct2_bytes({"decoder/embeddings/weight": w, "decoder/num_heads": np.array(6, np.int16)},
                     aliases=[("decoder/projection/weight", "decoder/embeddings/weight")])
    spec, v = W.read_ctranslate2(data)
    assert spec == "WhisperSpec" and int(v["decoder/num_heads"]) == 6
    assert np.array_equal(v["decoder/embeddings/weight"], w) and v["decoder/projection/weight"] is v["decoder/embeddings/weight"]
    with pytest.raises(ValueError, match="truncated"):
        W.read_ctranslate2(data[:40])
    with pytest.raises(ValueError, match="trailing bytes"):
        W.read_ctranslate2(data + b"\0")
    with pytest.raises(ValueError, match="version 4 is not supported"):
        W.read_ctranslate2(ct2_bytes({}, version=4))


def test_unknown_name():
    with pytest.raises(ValueError, match="whisper-base, whisper-tiny-en"):
        W.convert_whisper("whisper-large")


def test_shipped_tiny_en_maps_onto_every_hf_weight():
    """Every parameter of WhisperForConditionalGeneration (but the tied proj_out) gets a weight of its shape,
    and the fused attention is split in order q, k, v."""
    import torch
    from transformers import WhisperForConditionalGeneration

    parts, _ = W.source_files("whisper-tiny-en")
    spec, v = W.read_ctranslate2(b"".join(p.read_bytes() for p in parts))
    assert spec == "WhisperSpec"
    sd = W.state_dict(v)
    special = {"<|startoftranscript|>": 50257, "<|endoftext|>": 50256}
    config = W.whisper_config(v, {"suppress_ids": [], "suppress_ids_begin": []}, special)
    assert (config.d_model, config.encoder_layers, config.decoder_layers, config.vocab_size) == (384, 4, 4, 51864)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    shapes = {k: tuple(p.shape) for k, p in model.state_dict().items() if k != "proj_out.weight"}
    assert {k: a.shape for k, a in sd.items()} == shapes
    fused = v["decoder/layer_2/self_attention/linear_0/weight"]
    assert np.array_equal(sd["model.decoder.layers.2.self_attn.k_proj.weight"], fused[384:768])
    kv = v["decoder/layer_2/attention/linear_1/bias"]
    assert np.array_equal(sd["model.decoder.layers.2.encoder_attn.v_proj.bias"], kv[384:])
    assert "model.decoder.layers.2.self_attn.k_proj.bias" not in sd  # Whisper keys have no bias


def test_incomplete_parts_are_an_error():
    parts, _ = W.source_files("whisper-base")
    with pytest.raises(ValueError, match="truncated"):
        W.read_ctranslate2(parts[0].read_bytes())  # part 2 missing


@pytest.mark.slow
# prompt ids (start, [<|en|>, transcribe,] no-timestamps) and end, as in the Hugging Face Whisper repos
@pytest.mark.parametrize("name, prompt, eos", [("whisper-tiny-en", [50257, 50362], 50256),
                                               ("whisper-base", [50258, 50259, 50359, 50363], 50257)])
def test_converted_model_transcribes_a_real_recording(name, prompt, eos):
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from ttrl.extractors.transcript import normalize_transcript
    from ttrl.media import load_audio
    from ttrl.metrics import wer

    torch.set_num_threads(1)
    path = W.convert_whisper(name)
    assert path.name == W.folder_name(name) and W.convert_whisper(name) == path  # cached
    model = WhisperForConditionalGeneration.from_pretrained(path).eval()
    proc = WhisperProcessor.from_pretrained(path)
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    assert len(proc.tokenizer) == model.config.vocab_size
    feats = proc(load_audio(CLIP), sampling_rate=16000, return_tensors="pt").input_features
    kw = {"language": "en", "task": "transcribe"} if model.generation_config.is_multilingual else {}
    with torch.no_grad():
        ids = model.generate(feats, max_new_tokens=64, **kw)
    g = model.generation_config
    ids_cfg = [g.decoder_start_token_id, *([g.lang_to_id["<|en|>"], g.task_to_id["transcribe"]] if g.is_multilingual else []),
               g.no_timestamps_token_id]
    assert ids_cfg == prompt and g.eos_token_id == eos
    assert proc.tokenizer.convert_ids_to_tokens(prompt)[-1] == "<|notimestamps|>"
    text = proc.batch_decode(ids, skip_special_tokens=True)[0]
    assert wer([normalize_transcript(text)], [TRANSCRIPT]) < 0.2, text
