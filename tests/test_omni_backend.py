"""The omni backend on a tiny random config of transformers' real Qwen2.5-Omni thinker class, built here (nothing
downloaded): a folder in the full Qwen2.5-Omni layout (config nesting thinker_config, weights under `thinker.`) as
a GPU user's Qwen2.5-Omni-3B folder is, its processor from local pieces (SmolLM2's tokenizer with Qwen's marker
tokens, the Qwen2-VL image processor, the Whisper feature extractor). Checked: audio features and image tokens in
the prompt, seeded sampling, log-probs equal to a plain forward pass and to the sampler's, one GRPO step moving
the language model's LoRA only, and a missing or undecodable audio or image costing only its item."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ttrl.data import Query
from ttrl.rollout import Completion

pytestmark = pytest.mark.slow

CLIP = Path(__file__).parent / "data" / "speech" / "sense_and_sensibility_0890.flac"


def build_tiny_omni(out: Path) -> Path:
    """A tiny random Qwen2.5-Omni thinker saved as a full Qwen2.5-Omni folder."""
    from safetensors.torch import save_file
    from transformers import (
        AutoTokenizer,
        Qwen2_5OmniConfig,
        Qwen2_5OmniThinkerConfig,
        Qwen2_5OmniThinkerForConditionalGeneration,
        WhisperFeatureExtractor,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from ttrl.backends.omni import CHAT_TEMPLATE, QWEN_TOKENS, omni_processor_class
    from ttrl.zoo import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"), extra_special_tokens=dict(QWEN_TOKENS),
                                        padding_side="left")
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in QWEN_TOKENS.items()}
    # 64x64 images -> a 4x4 grid of 14-pixel patches -> 4 image tokens after the 2x2 merge
    images = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56, patch_size=14, merge_size=2,
                                      temporal_patch_size=2)
    processor = omni_processor_class()(image_processor=images, feature_extractor=WhisperFeatureExtractor(feature_size=128),
                                       tokenizer=tok, chat_template=CHAT_TEMPLATE)
    thinker = Qwen2_5OmniThinkerConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
                         "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}},
        vision_config={"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 32,
                           "fullatt_block_indexes": [0], "window_size": 56},
        audio_config={"encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 64, "d_model": 32, "output_dim": 32},
        audio_token_index=ids["audio_token"], image_token_index=ids["image_token"],
        video_token_index=ids["video_token"], audio_start_token_id=ids["audio_bos_token"],
        audio_end_token_id=ids["audio_eos_token"], vision_start_token_id=ids["vision_bos_token"],
    )
    torch.manual_seed(0)
    model = Qwen2_5OmniThinkerForConditionalGeneration(thinker).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    out.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(out)
    Qwen2_5OmniConfig(thinker_config=thinker.to_dict(), enable_audio_output=False).save_pretrained(out)
    model.generation_config.save_pretrained(out)
    # the released checkpoints' names: thinker.{model,audio_tower,visual,lm_head}.*
    names = {"model.language_model.": "thinker.model.", "model.audio_tower.": "thinker.audio_tower.",
             "model.visual.": "thinker.visual.", "lm_head.": "thinker.lm_head."}
    sd = {}
    for k, v in model.state_dict().items():
        prefix = next(p for p in names if k.startswith(p))
        sd[names[prefix] + k[len(prefix):]] = v.contiguous()
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


@pytest.fixture(scope="module")
def omni_path(tmp_path_factory):
    torch.set_num_threads(1)
    return str(build_tiny_omni(tmp_path_factory.mktemp("tiny-qwen-omni")))


@pytest.fixture(scope="module")
def omni(omni_path):
    from ttrl.backends.omni import OmniBackend
    from ttrl.config import ModelConfig

    return OmniBackend(ModelConfig(model=omni_path), need_reference=True, seed=0)


@pytest.fixture(scope="module")
def queries():
    from ttrl.tasks import load_dataset

    imgs = [it.query.images[0] for it in load_dataset("easyvqa:test", {}, 3, 0).items]
    return [Query("both", "Answer the spoken question.", images=(imgs[0],), audio=(str(CLIP),)),
            Query("frames", "What changes between the frames?", images=(imgs[1], imgs[2]), audio=(str(CLIP),)),
            Query("image-only", "What colour is the shape?", images=(imgs[2],)),
            Query("audio-only", "What is said?", audio=(str(CLIP),))]


def count(ids, token_id):
    return sum(t == token_id for t in ids)


def test_auto_picks_omni_and_loads_the_thinker(omni_path, omni):
    from ttrl.backends import backend_name

    assert backend_name("auto", omni_path) == "omni"
    assert type(omni.model.get_base_model()).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    from safetensors.torch import load_file

    saved = load_file(str(Path(omni_path) / "model.safetensors"))
    with omni.model.disable_adapter():  # the released names map onto the thinker's modules (no random re-init)
        got = dict(omni.model.get_base_model().named_parameters())
        assert torch.equal(got["model.audio_tower.conv1.weight"], saved["thinker.audio_tower.conv1.weight"])
        assert torch.equal(got["model.language_model.embed_tokens.weight"], saved["thinker.model.embed_tokens.weight"])


def test_processor_audio_features_and_image_tokens(omni, queries):
    from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import _get_feat_extract_output_lengths

    from ttrl.media import load_audio

    p = omni.render(queries[0], "Answer with a single word.")
    assert p.audio == queries[0].audio and p.images == queries[0].images
    assert p.text.index("<|audio_bos|><|AUDIO|><|audio_eos|>") < p.text.index("<|vision_bos|><|IMAGE|><|vision_eos|>")
    enc = omni.encode([p])
    frames = len(load_audio(CLIP)) // 160  # Whisper's 10 ms hop
    assert abs(int(enc["feature_attention_mask"].sum()) - frames) <= 1
    assert enc["input_features"].shape == (1, 128, 3000)
    ids = enc["input_ids"][0].tolist()
    cfg = omni.model.config
    assert count(ids, cfg.audio_token_id) == int(_get_feat_extract_output_lengths(enc["feature_attention_mask"].sum()))
    assert count(ids, cfg.image_token_id) == 4 and enc["image_grid_thw"].tolist() == [[1, 4, 4]]
    two = omni.encode([omni.render(queries[1], "")])
    assert count(two["input_ids"][0].tolist(), cfg.image_token_id) == 8  # one image per frame
    assert omni.prompt_length(queries[0], "Answer with a single word.") == len(ids)


def test_sampling_and_logprobs_match_a_forward_pass(tmp_path, omni, queries):
    prompts = [omni.render(q, "Answer briefly.") for q in queries]
    groups = omni.generate(prompts, 2, temperature=1.0, max_new_tokens=5, batch_size=8, seed=0, token_stats=True)
    assert [len(g) for g in groups] == [2, 2, 2, 2]
    again = omni.generate(prompts, 2, temperature=1.0, max_new_tokens=5, batch_size=8, seed=0)
    assert [[c.ids for c in g] for g in groups] == [[c.ids for c in g] for g in again]
    comps = [c for g in groups for c in g]
    assert all(c.audio == p.audio and c.images == p.images for p, g in zip(prompts, groups) for c in g)
    lp, _mask = omni.token_logprobs(comps, temperature=1.0)
    assert lp.requires_grad and (lp <= 0).all()
    base = omni.model.get_base_model()
    with torch.no_grad():
        ref, _ = omni.token_logprobs(comps, temperature=1.0, reference=True)
        assert torch.allclose(lp.detach(), ref, atol=1e-5)  # fresh adapter = base model
        for b, c in enumerate(comps):
            n = len(c.ids)
            np.testing.assert_allclose(lp[b, :n].detach().numpy(), c.stats.logprobs, atol=1e-4)  # = the sampler's
            # = a plain forward of the whole sequence through the thinker, inputs as its processor prepares them
            enc = omni.encode([prompts[b // 2]])
            assert enc["input_ids"][0].tolist() == list(c.prompt_ids)
            ids = torch.tensor([list(c.prompt_ids) + list(c.ids)])
            media = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
            logits = base(input_ids=ids, attention_mask=torch.ones_like(ids), **media).logits[0, len(c.prompt_ids) - 1:-1]
            plain = torch.log_softmax(logits, -1).gather(-1, torch.tensor(c.ids)[:, None])[:, 0]
            np.testing.assert_allclose(lp[b, :n].detach().numpy(), plain.numpy(), atol=1e-4)
    # the inputs reach the model: the same tokens scored against another image, or another clip, change their log-probs
    audio, sr = sf.read(CLIP)
    sf.write(tmp_path / "reversed.flac", audio[::-1], sr)  # the same length, so the same audio tokens
    clip = (str(tmp_path / "reversed.flac"),)
    for images, audio in ((queries[2].images, comps[0].audio), (comps[0].images, clip)):
        swapped = [Completion(c.prompt_ids, c.ids, c.text, c.finished, images=images, audio=audio) for c in comps[:2]]
        with torch.no_grad():
            other, _ = omni.token_logprobs(swapped, temperature=1.0)
        # (a random tiny model barely reacts, but an ignored input would give bit-identical numbers)
        assert not torch.equal(other, lp[:2].detach())


def test_grpo_step_changes_the_language_lora_only(omni, queries):
    from ttrl.config import GRPOConfig, SamplingConfig
    from ttrl.extractors import get_extractor
    from ttrl.rewards import Reward
    from ttrl.trainer import Trainer

    names = [n for n, p in omni.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n and "language_model" in n for n in names)  # encoders frozen
    before = {n: p.detach().clone() for n, p in omni.model.named_parameters() if p.requires_grad}
    trainer = Trainer(omni, get_extractor("text"), Reward("random"),
                      SamplingConfig(n_votes=4, n_train=4, temperature=1.0, max_new_tokens=4, batch_size=8),
                      GRPOConfig(lr=1e-2, kl_coef=0.01), instruction="Answer briefly.", seed=0)
    stats = trainer.step(queries[:2]).stats
    assert stats.groups_trained >= 1 and np.isfinite(stats.update.loss)
    after = dict(omni.model.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before if "lora_B" in n)


def test_bad_audio_and_images_are_reported_and_skipped(tmp_path, omni_path, queries):
    from ttrl.cli import main

    (tmp_path / "garbage.flac").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    sf.write(tmp_path / "silent.wav", np.zeros(8000), 16000)
    good = [{"id": q.id, "prompt": q.prompt, "image": list(q.images), "audio": q.audio[0], "answer": "red"}
            for q in queries[:2]]
    img, clip = queries[0].images[0], str(CLIP)
    bad = [("no-audio", clip.replace(".flac", "-missing.flac"), img), ("garbage", "garbage.flac", img),
           ("silent", "silent.wav", img), ("no-image", clip, "nope/none.png"), ("broken", clip, "broken.png")]
    rows = good[:1] + [{"id": i, "prompt": "Answer the question.", "audio": a, "image": m, "answer": "red"}
                       for i, a, m in bad] + good[1:]
    data = tmp_path / "omni.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    assert main(["run", "--model", omni_path, "--data", str(data), "--answer-type", "text", "--out", str(out),
                 "--reward", "majority", "--adapt-size", "1", "--epochs", "1", "--n-votes", "2", "--n-train", "2",
                 "--prompts-per-step", "1", "--base-maj-votes", "0", "--temperature", "1.0",
                 "--max-new-tokens", "4", "--eval-max-new-tokens", "4"]) == 0
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    reasons = {e["item"]: e["reason"] for e in events if e["event"] == "bad_input"}
    assert set(reasons) == {i for i, _, _ in bad}
    for name, msg in (("no-audio", "no such audio file"), ("garbage", "cannot decode"), ("silent", "silent"),
                      ("no-image", "no such image file"), ("broken", "cannot read the image")):
        assert msg in reasons[name], reasons[name]
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == ["both", "frames"]



@pytest.mark.parametrize("kind,answer_type", [("closed", "label"), ("open", "text")])
def test_spoken_easy_vqa_run(tmp_path, omni_path, kind, answer_type):
    """The built-in spoken easy-vqa task end to end: closed items scored as easy-vqa, open-ended ones also with
    ROUGE-L and BLEU against the scene's reference sentence."""
    from ttrl.cli import main

    out = tmp_path / "run"
    assert main(["run", "--model", omni_path, "--data", "easyvqa-spoken:test", "--task-args", json.dumps({"kind": kind}),
                 "--task-size", "2", "--out", str(out), "--reward", "majority", "--adapt-size", "1", "--epochs", "1",
                 "--n-votes", "2", "--n-train", "2", "--prompts-per-step", "1", "--base-maj-votes", "0",
                 "--temperature", "1.0", "--max-new-tokens", "4", "--eval-max-new-tokens", "4"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["answer_type"] == answer_type and summary["n_eval"] == 2 and summary["steps"] == 1
    assert 0 <= summary["base_rouge_l"] <= 1 and 0 <= summary["adapted_bleu"] <= 100
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert all(p["id"].startswith(f"test-{kind}-") for p in preds)
