"""The bundled tiny VLMs (SmolLM2 + a small CLIP tower trained on easy-vqa; tiny-vlm and the old tiny-vlm-v1):
assembly, processor, answers, the shipped cards."""
import pytest

from ttrl.tasks.easy_vqa import question_type
from ttrl.zoo import tiny_vlm, tiny_vlm_train

QUESTION = "what color is the shape?\nAnswer with a single word or short phrase."


def test_question_types_match_answer_categories():
    import easy_vqa

    colors = {"red", "green", "blue", "yellow", "teal", "brown", "gray", "black"}
    kinds = {"color": colors, "shape": {"circle", "rectangle", "triangle"}, "yesno": {"yes", "no"}}
    qs, answers, _ = easy_vqa.get_test_questions()
    for q, a in zip(qs, answers):
        assert a in kinds[question_type(q)], (q, a)


def test_eval_subset_is_fixed_and_stratified():
    a, b = tiny_vlm_train.eval_subset(20), tiny_vlm_train.eval_subset(20)
    assert a == b and len(set(a)) == 60


def test_image_labels_agree_with_every_shape_and_colour_answer():
    import easy_vqa

    qs, answers, image_ids = easy_vqa.get_train_questions()
    labels = tiny_vlm_train.image_labels(qs, answers, image_ids)
    assert len(labels) == len(set(image_ids))
    for q, a, i in zip(qs, answers, image_ids):
        kind = question_type(q)
        if kind == "shape":
            assert tiny_vlm_train.SHAPES[labels[i][0]] == a
        elif kind == "color":
            assert tiny_vlm_train.COLORS[labels[i][1]] == a
    known = sum(s >= 0 and c >= 0 for s, c in labels.values())
    assert known > 0.75 * len(labels)  # yes/no questions settle most of the rest


def test_every_tower_is_registered_and_resolves():
    from ttrl.zoo import all_models, resolve_model

    models = all_models()
    v1, v2, v3 = tiny_vlm.TOWERS["tiny-vlm-v1"], tiny_vlm.TOWERS["tiny-vlm-v2"], tiny_vlm.TOWERS["tiny-vlm"]
    assert {"tiny-vlm", "tiny-vlm-v2", "tiny-vlm-v1"} <= set(models)
    assert (v1.patch_size, v1.num_layers, v1.image_tokens) == (16, 2, 17)  # v1 exactly as first shipped
    assert len({v1.weights, v2.weights, v3.weights}) == 3 and all(t.weights.exists() for t in (v1, v2, v3))
    assert models["tiny-vlm-v1"].folder().startswith("tiny-vlm-v1-")
    path = resolve_model("tiny-vlm-v1")
    import json
    from pathlib import Path

    config = json.loads((Path(path) / "config.json").read_text())
    assert config["vision_config"]["patch_size"] == 16 and config["image_seq_length"] == 17


def test_zoo_names_the_missing_weights_and_how_to_build_them():
    # The trained tower is not committed yet (issue 4): resolving the zoo name must say how to build it.
    from ttrl.zoo import resolve_model

    if tiny_vlm.ASSET.exists():
        assert resolve_model("tiny-vlm")
    else:
        with pytest.raises(FileNotFoundError, match="ttrl zoo build tiny-vlm"):
            resolve_model("tiny-vlm")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The architecture (with the trained tower when it ships, else an untrained one), assembled into a
    temporary folder and loaded the way backends load it."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    weights = tiny_vlm.ASSET if tiny_vlm.ASSET.exists() else None
    out = tiny_vlm.assemble(tmp_path_factory.mktemp("tiny") / "tiny-vlm", weights)
    return AutoProcessor.from_pretrained(out), AutoModelForImageTextToText.from_pretrained(out).eval()


def _test_image(i: int):
    import easy_vqa
    from PIL import Image

    qs, answers, image_ids = easy_vqa.get_test_questions()
    return qs[i], answers[i], Image.open(easy_vqa.get_test_image_paths()[image_ids[i]]).convert("RGB")


@pytest.mark.slow
def test_chat_template_and_image_token_expansion(tiny):
    processor, model = tiny
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("<|im_start|>user\n<image>" + QUESTION + "<|im_end|>\n<|im_start|>assistant\n")
    plain = processor.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert "<|im_start|>user\nhi<|im_end|>" in plain and "<image>" not in plain

    _, _, image = _test_image(0)
    short = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
                                          add_generation_prompt=True, tokenize=False)
    enc = processor(text=[text, short], images=[image, image], return_tensors="pt", padding=True)
    n_img = (enc["input_ids"] == model.config.image_token_id).sum(1)
    assert n_img.tolist() == [tiny_vlm.NUM_IMAGE_TOKENS] * 2 == [17, 17]
    assert enc["pixel_values"].shape == (2, 3, 64, 64)
    assert processor.tokenizer.padding_side == "left" and enc["attention_mask"][1, 0] == 0  # left padded
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()


@pytest.mark.slow
def test_greedy_answer_to_an_easy_vqa_question(tiny):
    import torch

    from ttrl.extractors import get_extractor

    processor, model = tiny
    question, _, image = _test_image(2)  # "what is the color of the shape?"
    content = tiny_vlm_train.user_content(question)
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False)
    enc = processor(text=[text], images=[image], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=8)
    reply = processor.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert reply.strip()
    if tiny_vlm.ASSET.exists():  # the trained tower answers with a short label, not a sentence
        label = get_extractor("label").extract(reply)
        assert label is not None and len(label.split()) <= 2, reply


def test_zoo_cli_parses_build_options():
    import argparse

    from ttrl.zoo.cli import add_zoo_parser

    p = argparse.ArgumentParser(prog="ttrl")
    add_zoo_parser(p.add_subparsers(dest="command", required=True))
    ns = p.parse_args(["zoo", "build", "tiny-vlm", "--steps", "7", "--seed", "3", "--batch-size", "4", "--lr", "0.01"])
    assert (ns.zoo_command, ns.name, ns.steps, ns.seed, ns.batch_size, ns.lr, ns.out) == ("build", "tiny-vlm", 7, 3, 4, 0.01, None)
    assert p.parse_args(["zoo", "list"]).zoo_command == "list"
    ns = p.parse_args(["zoo", "build", "tiny-vlm-v1"])
    assert (ns.name, ns.steps, ns.pretrain_epochs) == ("tiny-vlm-v1", None, None)  # the model's own defaults apply
    ns = p.parse_args(["zoo", "build", "tiny-vlm-v2", "--no-yesno-describe", "--lm-lora-r", "0"])
    assert (ns.name, ns.yesno_describe, ns.lm_lora_r, ns.yesno_balance) == ("tiny-vlm-v2", False, 0, None)
    # every help text formats (a '%' in a dataclass field's help once crashed `ttrl zoo build -h`)
    assert "--omni-steps" in p._subparsers._group_actions[0].choices["zoo"]._subparsers._group_actions[0] \
        .choices["build"].format_help()


def test_shipped_v1_card_states_accuracies_in_band():
    import json

    v1 = tiny_vlm.TOWERS["tiny-vlm-v1"]
    acc = json.loads(v1.card_path.read_text())["evaluation"]["accuracy"]
    assert 0.40 <= acc["overall"] <= 0.75  # sees, but imperfectly; shape questions near chance
    assert acc["color"] > 0.125 + 0.1
    assert v1.weights.stat().st_size < 5_000_000


def test_shipped_card_meets_issue_16s_target_and_v2_beats_v1():
    """The cards, all measured through ttrl's backend (greedy) on the same fixed subset. tiny-vlm (v3) meets issue
    16's tower target: >= 85% overall, every type >= 75%, built in under 30 minutes (maj@16 is not above greedy:
    a one-word answerer's vote converges to its argmax). v2 beats v1 on every type."""
    import json

    card = json.loads(tiny_vlm.ASSET.with_name(tiny_vlm.CARD_NAME).read_text())
    ev = card["evaluation"]
    acc = ev["accuracy"]
    assert acc["overall"] >= 0.85 and min(acc["color"], acc["shape"], acc["yesno"]) >= 0.75, acc
    assert ev["n"] == 300 and "maj@16" in ev and ev["sample_accuracy"]["overall"] < acc["overall"]
    t = card["training"]
    assert t["build_seconds"] < 30 * 60 and t["lm_lora_r"] == 8 and t["yesno_describe"] and t["yesno_balance"]
    assert tiny_vlm.ASSET.stat().st_size < 10_000_000

    v2 = tiny_vlm.TOWERS["tiny-vlm-v2"]
    ev2 = json.loads(v2.card_path.read_text())["evaluation"]
    v1_ttrl = {"color": 0.50, "shape": 0.42, "yesno": 0.58}  # tiny-vlm-v1, evaluate_ttrl(per_type=100, votes=16)
    for kind, old in v1_ttrl.items():
        assert ev2["accuracy"][kind] >= old + 0.1 and ev2["accuracy"][kind] >= ev2["chance"][kind] + 0.2, kind
    assert v2.weights.stat().st_size < 5_000_000


def test_lm_lora_ships_beside_the_tower_and_merges_at_assembly(tmp_path):
    """A tower built with `lm_lora_r` ships the LM's LoRA factors in its weights file; `build` merges them, so the
    assembled LM computes what the LoRA-wrapped LM computed while training (up to the factors' float16)."""
    import torch

    from ttrl.zoo.lora import lora_factors, with_lora

    torch.set_num_threads(1)
    model, _ = tiny_vlm.build(None, seed=0)
    peft_model = with_lora(model, 2, 0, targets=r".*language_model.*layers\.(0|1)\.self_attn\.(q|v)_proj")
    for n, p in peft_model.named_parameters():
        if "lora_B" in n:
            p.data.normal_(std=0.05)
    ids = torch.tensor([[1, 5, 9, 11, 42]])
    with torch.no_grad():
        want = model.model.language_model(input_ids=ids).last_hidden_state
    weights = tmp_path / "w.safetensors"
    tiny_vlm.save_vision_weights(model, weights, lora_factors(peft_model))
    assert sum(k.startswith("lora.") for k in tiny_vlm.load_vision_weights(weights)) == 8
    plain, _ = tiny_vlm.build(weights)
    without, _ = tiny_vlm.build(None, seed=0)
    with torch.no_grad():
        got = plain.model.language_model(input_ids=ids).last_hidden_state
        base = without.model.language_model(input_ids=ids).last_hidden_state
    assert (want - base).abs().max() > 1e-2  # the LoRA changes the LM ...
    assert torch.allclose(got, want, atol=2e-3)  # ... and the merged weights reproduce it


def test_balanced_yesno_order_hides_the_answer_from_the_wording():
    """easy-vqa's yes/no answers can be guessed from the wording (a negated question is mostly 'yes'); with
    `answers` the build's order draws every (negated, shape/colour, answer) bucket equally often."""
    from collections import Counter

    import easy_vqa

    qs, answers, _ = easy_vqa.get_train_questions()
    skewed = Counter(tiny_vlm_train.yesno_bucket(q, a) for q, a in zip(qs, answers) if a in ("yes", "no"))
    assert skewed[(True, "color", "yes")] > 5 * skewed[(True, "color", "no")]  # the shortcut in the raw split
    order = tiny_vlm_train._train_order(qs, 0, True, 2, answers)
    head = order[:2400]
    assert Counter(question_type(qs[i]) for i in head) == {"yesno": 1200, "color": 600, "shape": 600}
    buckets = Counter(tiny_vlm_train.yesno_bucket(qs[i], answers[i]) for i in head if answers[i] in ("yes", "no"))
    assert len(buckets) == 8 and set(buckets.values()) == {150}
    assert len(set(order)) == len(order)
    assert tiny_vlm_train._train_order(qs, 0, True, 2) != order  # the plain order is unchanged by the option


def test_described_targets_name_the_image_before_a_yes_no_answer():
    from ttrl.extractors import get_extractor

    qs = ["what color is the shape?", "is there not a red shape?", "does the image contain a triangle?",
          "does the image contain a circle?", "what shape is in the image?", "is there a blue shape?"]
    answers = ["blue", "yes", "yes", "no", "triangle", "no"]
    image_ids = [0, 0, 0, 0, 1, 1]  # image 0's shape comes from a yes; image 1's colour is never settled
    targets = tiny_vlm_train.described(qs, answers, image_ids)
    assert targets == ["blue", "blue triangle, answer: yes", "blue triangle, answer: yes", "blue triangle, answer: no",
                       "triangle", None]
    label = get_extractor("label")
    assert [label.extract(t) for t in targets[:5]] == ["blue", "yes", "yes", "no", "triangle"]


def test_yes_no_text_warm_up_trains_only_the_lora_on_the_answer():
    import torch

    from ttrl.zoo.lora import with_lora

    torch.set_num_threads(1)
    model, proc = tiny_vlm.build(None, seed=0)
    model.requires_grad_(False)
    with_lora(model, 2, 0, targets=r".*language_model.*layers\.0\.self_attn\.(q|v)_proj")
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    before = [p.detach().clone() for p in lora]
    frozen = model.model.language_model.layers[1].mlp.up_proj.weight.detach().clone()
    qs = ["is there not a red shape?", "is there a circle?", "what color is the shape?"]
    targets = ["blue circle, answer: yes", "blue circle, answer: yes", "blue"]
    stats = tiny_vlm_train.warm_up_yesno(model, proc.tokenizer, qs, targets, [0, 1, 2], steps=2, batch_size=2,
                                         lr=1e-2, params=lora, log=None)
    assert stats["steps"] == 2 and 0 <= stats["final_accuracy"] <= 1
    assert any(not torch.equal(p, b) for p, b in zip(lora, before))
    assert torch.equal(model.model.language_model.layers[1].mlp.up_proj.weight, frozen)
    assert proc.tokenizer.padding_side == "left"  # restored for generation
