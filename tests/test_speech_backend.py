"""The speech backend on the bundled whisper-tiny-en: `--backend auto` picks it, greedy transcripts equal plain
transformers generate, sampled tokens score to the sampler's log-probs, a GRPO step moves the decoder's LoRA only,
and bad audio files cost only their item in a real run."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ttrl.data import Query

pytestmark = pytest.mark.slow

CLIP = Path(__file__).parent / "data" / "speech" / "sense_and_sensibility_0890.flac"


@pytest.fixture(scope="module")
def speech():
    from ttrl.backends.speech import SpeechBackend
    from ttrl.config import ModelConfig

    torch.set_num_threads(1)
    return SpeechBackend(ModelConfig(model="whisper-tiny-en"), need_reference=True, seed=0)


@pytest.fixture(scope="module")
def clips():
    from ttrl.tasks import load_dataset

    shipped = load_dataset("speech:test", {"shift": "white10"}, 1, 0).items[0].query
    return [Query("austen", "Transcribe.", audio=(str(CLIP),)), shipped]


def test_auto_picks_speech_for_a_whisper_folder():
    from ttrl.backends import backend_name
    from ttrl.zoo import resolve_model

    assert backend_name("auto", resolve_model("whisper-tiny-en")) == "speech"


def test_greedy_transcript_equals_transformers_generate(speech, clips):
    from ttrl.media import load_audio

    prompt = speech.render(clips[0], "ignored instruction")
    assert prompt.text == "<|startoftranscript|><|notimestamps|>" and prompt.audio == (str(CLIP),)
    got = speech.generate([prompt], 1, temperature=None, max_new_tokens=20, batch_size=4, seed=0)[0][0]
    feats = speech.processor(load_audio(CLIP), sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ids = speech.net.generate(feats, max_new_tokens=20)  # the same weights (LoRA inside), Whisper's own decoding
    want = speech.processor.batch_decode(ids, skip_special_tokens=True)[0]
    assert got.prompt_ids == (50257, 50362) and got.text == want and len(got.ids) <= 20, (got.text, want)


def test_sampled_logprobs_and_one_grpo_step(speech, clips):
    from ttrl.config import GRPOConfig, SamplingConfig
    from ttrl.extractors import get_extractor
    from ttrl.rewards import Reward
    from ttrl.trainer import Trainer

    prompts = [speech.render(q, "") for q in clips]
    groups = speech.generate(prompts, 4, temperature=1.0, max_new_tokens=8, batch_size=8, seed=3, token_stats=True)
    comps = [c for g in groups for c in g]
    assert all(c.audio == p.audio for p, g in zip(prompts, groups) for c in g)
    with torch.no_grad():
        lp, mask = speech.token_logprobs(comps, temperature=1.0)
        ref, _ = speech.token_logprobs(comps, temperature=1.0, reference=True)
    for b, c in enumerate(comps):  # adapter at init: policy = reference = sampler
        n = len(c.ids)
        assert mask[b, :n].all() and not mask[b, n:].any()
        np.testing.assert_allclose(lp[b, :n].numpy(), c.stats.logprobs, atol=1e-4)
        np.testing.assert_allclose(ref[b, :n].numpy(), c.stats.logprobs, atol=1e-4)

    trainable = [n for n, p in speech.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and ".decoder." in n for n in trainable)  # encoder frozen
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable} == {"q_proj", "k_proj", "v_proj", "out_proj"}
    before = {n: p.detach().clone() for n, p in speech.model.named_parameters() if "lora_B" in n}
    trainer = Trainer(speech, get_extractor("transcript"), Reward("mbr"),
                      SamplingConfig(n_votes=4, n_train=4, temperature=1.0, max_new_tokens=8, batch_size=8),
                      GRPOConfig(lr=1e-3, kl_coef=0.01), instruction="", seed=0)
    stats = trainer.step(clips).stats
    assert stats.groups_trained >= 1 and np.isfinite(stats.update.loss)
    after = dict(speech.model.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before)


def test_bad_audio_files_are_reported_and_skipped(tmp_path):
    from ttrl.cli import main
    from ttrl.tasks import load_dataset

    good = load_dataset("speech:test", {"shift": "clean"}, 2, 0).items
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "garbage.flac").write_bytes(bytes(range(256)) * 8)
    sf.write(tmp_path / "silent.wav", np.zeros(8000), 16000)
    rows = [{"id": it.query.id, "prompt": "Transcribe.", "audio": it.query.audio[0], "answer": it.answer} for it in good]
    rows[1:1] = [{"id": name, "prompt": "Transcribe.", "audio": f, "answer": "x"} for name, f in
                 (("missing", "nope.wav"), ("empty", "empty.wav"), ("silent", "silent.wav"), ("garbage", "garbage.flac"))]
    data = tmp_path / "speech.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    assert main(["run", "--model", "whisper-tiny-en", "--data", str(data), "--answer-type", "transcript",
                 "--out", str(out), "--reward", "majority", "--adapt-size", "1", "--epochs", "1", "--n-votes", "2",
                 "--n-train", "2", "--prompts-per-step", "1", "--base-maj-votes", "0", "--temperature", "1.0",
                 "--max-new-tokens", "6", "--eval-max-new-tokens", "6"]) == 0
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    bad = {e["item"]: e["reason"] for e in events if e["event"] == "bad_input"}
    assert set(bad) == {"missing", "empty", "silent", "garbage"}
    for name, msg in (("missing", "no such audio file"), ("empty", "empty file"), ("silent", "silent"),
                      ("garbage", "cannot decode")):
        assert msg in bad[name] and name in bad[name]
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == [it.query.id for it in good]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_eval"] == 2 and summary["steps"] == 1
    assert 0 <= summary["base_wer"] < 2 and 0 <= summary["adapted_wer"] < 2
