"""`ttrl zoo build tiny-janus` at a toy budget (2 SmolLM2 layers, 32x32 images, a handful of steps): the three
stages run, the weights + card are written, the same seed gives the same weights, the assembled folder loads
through the t2i backend and runs Meta-TTRL from the CLI; the shipped LoRA factors merge to what peft computes."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ttrl.cli import main

pytestmark = pytest.mark.slow  # loads SmolLM2's weights (2 of its layers)

TOY = ["--image-size", "32", "--codebook", "64", "--text-layers", "2", "--vq-steps", "3", "--vq-batch", "4",
       "--enc-steps", "2", "--enc-batch", "2", "--und-steps", "2", "--und-batch", "2", "--align-steps", "2", "--und-text-steps", "2", "--gen-steps", "2", "--gen-batch", "2", "--eval-n", "2",
       "--threads", "1"]


def test_toy_build_is_reproducible_and_runs_meta_ttrl(tmp_path):
    torch.set_num_threads(1)
    w1, w2, folder = tmp_path / "a.safetensors", tmp_path / "b.safetensors", tmp_path / "tiny-janus"
    assert main(["zoo", "build", "tiny-janus", *TOY, "--out", str(w1), "--folder", str(folder)]) == 0
    assert main(["zoo", "build", "tiny-janus", *TOY, "--out", str(w2)]) == 0
    a, b = load_file(str(w1)), load_file(str(w2))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # same seed, same weights
    assert any(k.startswith("lora.") for k in a) and any(k.startswith("model.vqmodel.") for k in a)
    assert not any(k.startswith(("model.language_model.", "lm_head")) for k in a)  # SmolLM2 itself never ships
    card = json.loads((tmp_path / "a_card.json").read_text())
    ev = card["evaluation"]
    assert 0 <= ev["yes_no_accuracy"] <= 1 and 0 <= ev["vq_reconstruction_full"] <= 1 and ev["n_yes_no"] == 4
    assert 0 <= ev["generation"]["full"] <= 1 and card["training"]["stages"]["generation"]["lora_modules"] == 14

    # --und-gen-replay W: every understanding step also trains on a generation batch; the loss reaches the LoRA
    assert card["training"]["stages"]["understanding"]["replay_steps"] == 0  # off by default
    w3 = tmp_path / "c.safetensors"
    assert main(["zoo", "build", "tiny-janus", *TOY, "--und-gen-replay", "1", "--out", str(w3)]) == 0
    c = load_file(str(w3))
    und = json.loads((tmp_path / "c_card.json").read_text())["training"]["stages"]["understanding"]
    assert und["replay_steps"] == 4 and und["replay_loss_curve"][0] > 0  # 2 text warm-up + 2 image steps
    assert all(torch.equal(a[k], c[k]) for k in a if k.startswith("model.vqmodel."))  # stages before: unchanged
    assert not all(torch.equal(a[k], c[k]) for k in a if k.startswith("lora."))

    # --und-through-vq 1: the encoder trains on VQ reconstructions (what decoded generations look like)
    w4 = tmp_path / "d.safetensors"
    assert main(["zoo", "build", "tiny-janus", *TOY, "--und-through-vq", "1", "--out", str(w4)]) == 0
    d = load_file(str(w4))
    assert all(torch.equal(a[k], d[k]) for k in a if k.startswith(("model.vqmodel.", "model.generation_")))
    assert not all(torch.equal(a[k], d[k]) for k in a if k.startswith("model.vision_model."))

    # the builder trains on the prompts exactly as the t2i backend renders them
    from ttrl.backends.t2i import JanusBackend
    from ttrl.backends.unified import ImageGenOptions
    from ttrl.config import ModelConfig
    from ttrl.data import Query
    from ttrl.zoo.tiny_janus_train import YES_NO, yes_no_prompts

    backend = JanusBackend(ModelConfig(model=str(folder), device="cpu", finetune="full"), need_reference=False)
    q = "Is the circle red?"
    assert YES_NO == ImageGenOptions().yes_no_instruction
    assert backend.render(Query("yes-no/0", q, images=("image",)), YES_NO).text == \
        yes_no_prompts(backend.processor, [q])[0]
    assert backend.num_image_tokens == 16 and backend.image_size == 32

    out = tmp_path / "run"
    assert main(["run", "-m", str(folder), "--data", "scenes:test", "--task-size", "1", "--reward", "meta_ttrl",
                 "--n-votes", "2", "--n-train", "2", "--epochs", "1", "--adapt-size", "1", "--lora-r", "4",
                 "--device", "cpu", "--meta-ttrl-rubric-tokens", "8", "--report", "false", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == 1 and (out / "grid.png").is_file()
    assert len(list((out / "images" / "adapted").glob("*.png"))) == 1


def test_lora_factors_merge_to_the_peft_model():
    from peft import LoraConfig, get_peft_model

    from ttrl.zoo.lora import lora_factors, merge_lora
    from ttrl.zoo.tiny_janus import Arch, build

    torch.set_num_threads(1)
    arch = Arch(image_size=32, codebook=64, text_layers=1)
    model, _ = build(arch)
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=r".*language_model.*\.(q|v)_proj"))
    torch.manual_seed(1)
    for n, p in peft_model.named_parameters():
        if "lora_B" in n:
            p.data.normal_()
    ids = torch.tensor([[1, 5, 9, 11]])
    with torch.no_grad():
        want = peft_model.get_base_model().model.language_model(input_ids=ids).last_hidden_state
    factors = lora_factors(peft_model)
    assert len(factors) == 4
    plain, _ = build(arch)
    merge_lora(plain, factors)
    with torch.no_grad():
        got = plain.model.language_model(input_ids=ids).last_hidden_state
    assert torch.allclose(got, want, atol=1e-4)


def test_shipped_tiny_janus_answers_about_scenes_as_its_card_says(tmp_path):
    """The shipped weights are the card's build, and assembled they answer yes/no questions about test scenes above
    chance through the t2i backend (card: 90% on 200 questions; here the first 20 scenes' 40 questions: 92.5%)."""
    from ttrl.zoo.tiny_janus import ASSET, assemble, load_weights
    from ttrl.zoo.tiny_janus_train import evaluate

    card = json.loads(ASSET.with_name("tiny_janus_card.json").read_text())
    assert card["weights_bytes"] == ASSET.stat().st_size
    assert card["evaluation"]["yes_no_accuracy"] == 0.89 and card["evaluation"]["n_yes_no"] == 200
    torch.set_num_threads(1)
    _, arch = load_weights(ASSET)
    ev = evaluate(assemble(tmp_path / "tiny-janus", ASSET), arch, n=20, seed=card["training"]["seed"])
    assert ev["n_yes_no"] == 40 and ev["yes_no_accuracy"] >= 0.85, ev


def test_as_decoded_replaces_a_seeded_share_by_reconstructions():
    from ttrl.scenes import DrawOptions, draw
    from ttrl.tasks.scenes import split
    from ttrl.zoo.tiny_janus import Arch, build
    from ttrl.zoo.tiny_janus_train import as_decoded, pixels, to_images, vq_forward

    torch.manual_seed(0)
    arch = Arch(image_size=32, codebook=64, text_layers=1)
    model, _ = build(arch, None, seed=0)
    ims = [draw(sp, seed=i, opts=DrawOptions(size=32)) for i, sp in enumerate(split("train")[:6])]
    assert as_decoded(model, ims, 0.0, 1) == ims
    recon = to_images(vq_forward(model.model.vqmodel, pixels(ims))[0])
    every = as_decoded(model, ims, 1.0, 1)
    assert all((np.asarray(a) == np.asarray(b)).all() for a, b in zip(every, recon))
    half, again = as_decoded(model, ims, 0.5, 7), as_decoded(model, ims, 0.5, 7)
    kept = [h is im for h, im in zip(half, ims)]
    assert 0 < sum(kept) < len(ims) and kept == [h is im for h, im in zip(again, ims)]  # seeded


def test_encoder_pretraining_takes_a_share_of_its_batches_from_a_pool():
    import dataclasses

    from ttrl.scenes import DrawOptions, draw
    from ttrl.tasks.scenes import split
    from ttrl.zoo.tiny_janus import Arch, build
    from ttrl.zoo.tiny_janus_train import Budget, pretrain_encoder

    arch = Arch(image_size=32, codebook=64, text_layers=1)
    budget = dataclasses.replace(Budget(), enc_steps=2, enc_batch=4)
    specs = split("train")
    pool = [draw(sp, seed=i, opts=DrawOptions(size=32)) for i, sp in enumerate(split("test")[:3])]

    def encoder_after(**kw):
        model, _ = build(arch, None, seed=0)
        pretrain_encoder(model, arch, budget, specs, 0, None, **kw)
        return model.model.vision_model.state_dict()

    plain = encoder_after()
    assert all(torch.equal(plain[k], v) for k, v in encoder_after(pool=pool, pool_share=0.0).items())
    assert all(torch.equal(plain[k], v) for k, v in encoder_after(pool=(), pool_share=1.0).items())
    mixed = encoder_after(pool=pool, pool_share=1.0)
    assert not all(torch.equal(plain[k], v) for k, v in mixed.items())


def test_first_rank_undoes_stack_lora_for_the_first_set():
    from ttrl.zoo.lora import first_rank, stack_lora

    g = torch.Generator().manual_seed(0)
    gen = {"lora.q.A": torch.randn(4, 6, generator=g), "lora.q.B": torch.randn(5, 4, generator=g)}
    und = {"lora.q.A": torch.randn(2, 6, generator=g), "lora.q.B": torch.randn(5, 2, generator=g)}
    stacked = stack_lora(gen, und)
    assert torch.allclose(stacked["lora.q.B"] @ stacked["lora.q.A"],
                          gen["lora.q.B"] @ gen["lora.q.A"] + und["lora.q.B"] @ und["lora.q.A"])
    other = torch.ones(3)
    cut = first_rank({**stacked, "model.vq.w": other}, 4)
    assert torch.equal(cut["lora.q.A"], gen["lora.q.A"]) and torch.equal(cut["lora.q.B"], gen["lora.q.B"])
    assert cut["model.vq.w"] is other


def test_text_keeping_holds_the_lm_near_itself_on_described_questions():
    """--gen-text-keep W: the generation LoRA also pays KL from the frozen LM on described yes/no questions, so
    after the stage the LM has moved less on such text than without it (on questions no step saw)."""
    import dataclasses

    from ttrl.tasks.scenes import split
    from ttrl.zoo.tiny_janus import Arch, build
    from ttrl.zoo.tiny_janus_train import (
        Budget,
        described_pairs,
        described_prompts,
        scenes,
        train_generation,
    )

    torch.set_num_threads(1)
    arch = Arch(image_size=32, codebook=64, text_layers=1)
    specs = split("train")
    rows = described_pairs(scenes(split("test"), 4, seed=11, size=32), seed=12)

    def moved(keep: float) -> tuple[float, dict]:
        model, processor = build(arch, None, seed=0)
        model.requires_grad_(False)
        enc = described_prompts(processor.tokenizer, rows)
        with torch.no_grad():
            before = model(**enc).logits.float().log_softmax(-1)
        budget = dataclasses.replace(Budget(), gen_steps=10, gen_batch=2, gen_lr=1e-2, gen_text_keep=keep,
                                     gen_text_batch=4)
        _, stats = train_generation(model, processor, arch, budget, specs, 0, None)
        with torch.no_grad():
            after = model(**enc).logits.float().log_softmax(-1)
        kl = (after.exp() * (after - before)).sum(-1)
        return float((kl * enc["attention_mask"]).sum() / enc["attention_mask"].sum()), stats

    free, s0 = moved(0.0)
    kept, s1 = moved(10.0)
    assert s0["text_kl_curve"] == [] and s1["text_kl_curve"][0] > 0
    assert free > 0 and kept < 0.5 * free
