"""The vision-language path end to end on the bundled tiny-vlm (LLaVA architecture: SmolLM2 + a small
CLIP tower trained on easy-vqa): processor, image tokens, sampling, log-probs with images, a GRPO step,
and bad images costing only their item."""
import json

import numpy as np
import pytest
import torch

from ttrl.cli import main
from ttrl.data import Query
from ttrl.tasks import load_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vlm_path():
    """The bundled tiny-vlm with its trained vision weights, or, before they are built, the same
    architecture with an untrained tower (the backend mechanics tested here do not need it to see)."""
    from ttrl.zoo import cache_root, resolve_model, tiny_vlm

    if tiny_vlm.ASSET.exists():
        return resolve_model("tiny-vlm")
    out = cache_root() / "models" / "tiny-vlm-untrained"
    if not (out / "config.json").exists():
        tiny_vlm.assemble(out, None)
    return str(out)


@pytest.fixture(scope="module")
def vlm(vlm_path):
    from ttrl.backends.vision import VisionBackend
    from ttrl.config import ModelConfig

    return VisionBackend(ModelConfig(model=vlm_path), need_reference=True)


@pytest.fixture(scope="module")
def items():
    return load_dataset("easyvqa:test", {}, 4, 0).items


def image_token_count(vlm, ids):
    return sum(t == vlm.model.config.image_token_id for t in ids)


def test_prompts_images_and_sampling(vlm, items):
    from ttrl.extractors import get_extractor

    instr = get_extractor("label").instruction
    prompts = [vlm.render(it.query, instr) for it in items[:3]]
    assert all(p.images == it.query.images for p, it in zip(prompts, items))
    two = vlm.render(Query("two", "are the shapes the same colour?", images=items[0].query.images + items[1].query.images),
                     instr)
    groups = vlm.generate(prompts + [two], 2, temperature=1.0, max_new_tokens=6, batch_size=8, seed=0)
    assert [len(g) for g in groups] == [2, 2, 2, 2]
    per_image = image_token_count(vlm, groups[0][0].prompt_ids)
    assert per_image > 1 and all(image_token_count(vlm, g[0].prompt_ids) == per_image for g in groups[:3])
    assert image_token_count(vlm, groups[3][0].prompt_ids) == 2 * per_image  # several images per item
    assert groups[3][0].images == two.images
    again = vlm.generate(prompts + [two], 2, temperature=1.0, max_new_tokens=6, batch_size=8, seed=0)
    assert [[c.ids for c in g] for g in groups] == [[c.ids for c in g] for g in again]


def test_logprobs_with_images_and_reference(vlm, items):
    prompts = [vlm.render(it.query, "Answer with a single word.") for it in items[:2]]
    comps = [c for g in vlm.generate(prompts, 2, temperature=1.0, max_new_tokens=5, batch_size=8, seed=1) for c in g]
    lp, mask = vlm.token_logprobs(comps, temperature=1.0)
    assert lp.requires_grad and lp.shape[0] == 4 and (lp <= 0).all()
    with torch.no_grad():
        autocast, vlm.autocast = vlm.autocast, None  # exact in float32 (bf16 rounding differs with padding)
        try:
            full, _ = vlm.token_logprobs(comps, temperature=1.0)
            for b, c in enumerate(comps):
                single, _ = vlm.token_logprobs([c], temperature=1.0)
                n = len(c.ids)
                assert torch.allclose(full[b, :n], single[0, :n], atol=1e-4)
        finally:
            vlm.autocast = autocast
        ref, _ = vlm.token_logprobs(comps, temperature=1.0, reference=True)
        assert torch.allclose(lp.detach(), ref, atol=1e-4)  # fresh adapter = base model
        # the image matters: the same tokens scored against another image change their log-probs
        swapped = [type(c)(c.prompt_ids, c.ids, c.text, c.finished, None, comps[2].images) for c in comps[:2]]
        other, _ = vlm.token_logprobs(swapped, temperature=1.0)
        assert not torch.allclose(other, lp[:2].detach(), atol=1e-3)


def test_grpo_step_changes_language_lora_only(vlm, items):
    from ttrl.config import GRPOConfig, SamplingConfig
    from ttrl.extractors import get_extractor
    from ttrl.rewards import Reward
    from ttrl.trainer import Trainer

    names = [n for n, p in vlm.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n and "language_model" in n for n in names)  # vision tower frozen
    before = {n: p.detach().clone() for n, p in vlm.model.named_parameters() if p.requires_grad}
    trainer = Trainer(vlm, get_extractor("label"), Reward("random"),
                      SamplingConfig(n_votes=4, n_train=4, temperature=1.0, max_new_tokens=5, batch_size=8),
                      GRPOConfig(lr=1e-3, kl_coef=0.01), instruction="Answer with a single word.", seed=0)
    stats = trainer.step([it.query for it in items[:2]]).stats
    assert stats.groups_trained >= 1
    after = dict(vlm.model.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before if "lora_B" in n)


def test_easy_vqa_run_with_bad_images(tmp_path, vlm_path):
    """A missing and an unreadable image are reported with their item; the other items run."""
    good = load_dataset("easyvqa:test", {}, 3, 5).items
    (tmp_path / "broken.png").write_bytes(b"not a png")
    rows = [{"id": it.query.id, "prompt": it.query.prompt, "image": it.query.images[0], "answer": it.answer}
            for it in good]
    rows.insert(1, {"id": "missing", "prompt": "what color is the shape?", "image": "nope/none.png", "answer": "red"})
    rows.insert(2, {"id": "broken", "prompt": "what shape is this?", "image": "broken.png", "answer": "circle"})
    data = tmp_path / "vqa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    assert main(["run", "--model", vlm_path, "--data", str(data), "--answer-type", "label", "--out", str(out),
                 "--reward", "frequency",
                 "--adapt-size", "2", "--epochs", "1", "--n-votes", "4", "--n-train", "4", "--prompts-per-step", "2",
                 "--base-maj-votes", "2", "--max-new-tokens", "6", "--eval-max-new-tokens", "6"]) == 0
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    bad = {e["item"]: e["reason"] for e in events if e["event"] == "bad_input"}
    assert set(bad) == {"missing", "broken"}
    assert "none.png" in bad["missing"] and "no such image file" in bad["missing"]
    assert "broken.png" in bad["broken"] and "cannot read the image" in bad["broken"]
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == [it.query.id for it in good]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["answer_type"] == "label" and summary["n_eval"] == 3 and summary["steps"] == 1
    assert np.isfinite(summary["adapted_accuracy"])
