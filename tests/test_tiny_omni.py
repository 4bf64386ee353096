"""`ttrl zoo build tiny-omni` at a toy budget (1 SmolLM2 layer, 1 Whisper-base layer, a 1-block vision tower, 56-pixel
images, a couple of steps): the weights (trained parts only) and the card are written, the thinker folder assembled
from them resolves as `--model tiny-omni`, loads through the omni backend, samples an answer to a spoken easy-vqa
item and takes a GRPO step that moves its language LoRA."""
import json

import pytest
import torch
from safetensors.torch import load_file

from ttrl.cli import main

pytestmark = pytest.mark.slow  # loads SmolLM2's and Whisper-base's weights (one layer of each)

TOY = ["--omni-image-side", "56", "--omni-vision-width", "32", "--omni-vision-layers", "1", "--omni-vision-heads", "2",
       "--omni-text-layers", "1", "--omni-audio-layers", "1", "--omni-tower-epochs", "1", "--omni-tower-batch", "4",
       "--omni-tower-images", "8", "--omni-tower-eval-images", "8", "--omni-steps", "2", "--omni-batch", "2",
       "--omni-train-items", "2", "--omni-eval-closed", "1", "--omni-eval-open", "1", "--omni-max-new-closed", "2",
       "--omni-max-new-open", "3", "--threads", "1"]


def test_toy_build_loads_samples_and_trains(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    weights = tmp_path / "tiny_omni.safetensors"
    assert main(["zoo", "build", "tiny-omni", *TOY, "--out", str(weights)]) == 0
    tensors = load_file(str(weights))
    assert any(k.startswith("model.visual.blocks.") for k in tensors) and "model.audio_tower.proj.weight" in tensors
    assert all(k.startswith(("model.visual.", "model.audio_tower.proj.")) for k in tensors)  # SmolLM2, Whisper never ship
    card = json.loads((tmp_path / "tiny_omni_card.json").read_text())
    assert card["arch"]["image_side"] == 56 and card["budget"]["steps"] == 2
    assert len(card["training"]["projectors"]["loss_curve"]) >= 2
    for kind in ("closed", "open"):
        assert card["evaluation"][kind]["n"] == 1
        for cond in ("both", "audio_removed", "image_removed"):
            assert 0 <= card["evaluation"][kind][cond]["accuracy"] <= 1
    assert 0 <= card["evaluation"]["open"]["both"]["rouge_l"] <= 1

    # `--model tiny-omni` resolves to a thinker folder assembled from the shipped weights (here: the toy ones)
    from ttrl.backends import backend_name
    from ttrl.zoo import resolve_model, tiny_omni

    text, whisper = tiny_omni._text_folder(), tiny_omni._whisper_folder()  # the parts stay in the shared cache
    monkeypatch.setattr(tiny_omni, "_text_folder", lambda: text)
    monkeypatch.setattr(tiny_omni, "_whisper_folder", lambda: whisper)
    monkeypatch.setenv("TTRL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tiny_omni, "ASSET", weights)
    path = resolve_model("tiny-omni")
    assert path.startswith(str(tmp_path / "cache")) and backend_name("auto", path) == "omni"

    from ttrl.backends.omni import OmniBackend
    from ttrl.config import GRPOConfig, ModelConfig, SamplingConfig
    from ttrl.extractors import get_extractor
    from ttrl.rewards import Reward
    from ttrl.tasks import load_dataset
    from ttrl.trainer import Trainer

    omni = OmniBackend(ModelConfig(model=path), need_reference=True, seed=0)
    base = omni.model.get_base_model()
    assert type(base).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    got = dict(base.named_parameters())
    assert torch.equal(got["model.audio_tower.proj.weight"], tensors["model.audio_tower.proj.weight"])
    assert torch.equal(got["model.visual.merger.mlp.0.weight"], tensors["model.visual.merger.mlp.0.weight"])

    item = load_dataset("easyvqa-spoken:test", {"kind": "closed"}, 1, 0).items[0]
    instruction = get_extractor("label").instruction
    prompt = omni.render(item.query, instruction)
    enc = omni.encode([prompt])
    assert int((enc["input_ids"] == base.config.image_token_id).sum()) == 4  # 56 px -> 4x4 patches -> 2x2 merged
    assert int((enc["input_ids"] == base.config.audio_token_id).sum()) > 0
    groups = omni.generate([prompt], 2, temperature=1.0, max_new_tokens=3, batch_size=2, seed=0)
    again = omni.generate([prompt], 2, temperature=1.0, max_new_tokens=3, batch_size=2, seed=0)
    assert [c.ids for c in groups[0]] == [c.ids for c in again[0]] and all(c.ids for c in groups[0])
    assert groups[0][0].audio == item.query.audio and groups[0][0].images == item.query.images

    before = {n: p.detach().clone() for n, p in omni.model.named_parameters() if p.requires_grad}
    assert before and all("lora_" in n and "language_model" in n for n in before)
    # hot sampling: the toy model's few trained steps leave it peaked, and identical samples give GRPO no gradient
    # (their advantages sum to zero); on one CPU T 1 drew four identical 3-token answers
    trainer = Trainer(omni, get_extractor("text"), Reward("random"),
                      SamplingConfig(n_votes=4, n_train=4, temperature=3.0, max_new_tokens=6, batch_size=4),
                      GRPOConfig(lr=1e-2, kl_coef=0.01), instruction=instruction, seed=0)
    stats = trainer.step([item.query]).stats
    assert stats.groups_trained == 1 and stats.update.grad_norm > 0
    after = dict(omni.model.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before if "lora_B" in n)
    omni.close()


def test_same_seed_same_weights():
    """The builder's parts are seeded: two toy builds of the model and one stage-2 step agree to the bit; stage 1
    moves the tower and merger, stage 2 (tower frozen by default) the merger and the audio proj only."""
    from ttrl.zoo.tiny_omni import Arch, build
    from ttrl.zoo.tiny_omni_train import Budget, pretrain_tower, train_projectors

    torch.set_num_threads(1)
    arch = Arch(image_side=56, vision_width=32, vision_layers=1, vision_heads=2, text_layers=1, audio_layers=1)
    budget = Budget(tower_epochs=1, tower_batch=4, tower_images=4, tower_eval_images=4, steps=1, batch=2, train_items=1)
    trained = ("model.visual.", "model.audio_tower.proj.")

    def snapshot(model):
        return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(trained)}

    runs = []
    for _ in range(2):
        model, processor = build(arch, seed=3)
        init = snapshot(model)
        pretrain_tower(model, processor, budget, seed=3, log=lambda _: None)
        towered = snapshot(model)
        train_projectors(model, processor, budget, seed=3, log=lambda _: None)
        runs.append(snapshot(model))
    assert runs[0].keys() == runs[1].keys() and all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    moved = {k for k in init if not torch.equal(init[k], towered[k])}  # stage 1: the tower and merger
    assert any(k.startswith("model.visual.blocks.") for k in moved) and "model.visual.merger.mlp.0.weight" in moved
    moved = {k for k in towered if not torch.equal(towered[k], runs[1][k])}  # stage 2: the projectors only
    assert moved == {k for k in towered if k.startswith(("model.visual.merger.", "model.audio_tower.proj."))}


def test_the_first_build_stays_available_as_tiny_omni_v1():
    from ttrl.zoo import ZOO, tiny_omni
    from ttrl.zoo.tiny_omni_train import card_path

    new, old = ZOO["tiny-omni"].folder(), ZOO["tiny-omni-v1"].folder()
    assert new.startswith("tiny-omni-") and old.startswith("tiny-omni-v1-") and new[-10:] != old[-10:]
    cards = [json.loads(card_path(p).read_text()) for p in (tiny_omni.ASSET, tiny_omni.ASSET_V1)]
    # the shipped tower was trained 30 epochs and reads shape; the first one, 10 epochs, did not
    assert [c["budget"]["tower_epochs"] for c in cards] == [30, 10]
    assert [c["training"]["tower"]["test_image_accuracy"]["shape"] > 0.9 for c in cards] == [True, False]
