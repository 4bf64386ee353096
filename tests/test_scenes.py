"""Procedural scenes and the pixel checker: hand-drawn images with known answers (positives and negatives), the
drawer checked by the checker, spec validation, and the `scenes:` task source (spec only in Item.meta)."""
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from ttrl.data import DataError, read_jsonl
from ttrl.scenes import PALETTE, SceneSpec, Thing, all_specs, check, draw, draw_shape, find_blobs, summarize

BLUE_ABOVE_RED = SceneSpec((Thing("square", "blue"), Thing("circle", "red")), "above")


def canvas(size=64):
    im = Image.new("RGB", (size, size), (255, 255, 255))
    return im, ImageDraw.Draw(im)


def spec(text_objects, relation=None):
    return SceneSpec(tuple(Thing(*o) for o in text_objects), relation)


def test_shape_classes_from_hand_drawn_shapes_any_size_and_rotation():
    for shape in ("circle", "square", "triangle"):
        for side, rot in ((12, 0), (20, 0), (28, 0), (20, 45), (24, 17), (16, 90)):
            im, d = canvas()
            draw_shape(d, shape, (10, 10, 10 + side, 10 + side), PALETTE["green"], rotation=rot)
            blobs = find_blobs(im)
            assert [(b.colour, b.shape) for b in blobs] == [("green", shape)], (shape, side, rot, blobs)


def test_blue_square_above_red_circle_positive_and_negatives():
    im, d = canvas()
    draw_shape(d, "square", (22, 4, 40, 22), PALETTE["blue"])
    draw_shape(d, "circle", (24, 40, 42, 58), PALETTE["red"])
    ok = check(im, BLUE_ABOVE_RED)
    assert ok.full and ok.categories == {"colour": True, "shape": True, "binding": True, "position": True}
    # the same picture against other prompts
    below = check(im, SceneSpec(BLUE_ABOVE_RED.things, "below"))
    assert below.categories["position"] is False and not below.full
    swapped = check(im, spec([("circle", "blue"), ("square", "red")], "above"))  # colours bound to the wrong shapes
    assert swapped.categories == {"colour": True, "shape": True, "binding": False, "position": False}
    green = check(im, spec([("square", "green")]))
    assert green.categories == {"colour": False, "shape": True, "binding": False}
    tri = check(im, spec([("triangle", "blue")]))
    assert tri.categories == {"colour": True, "shape": False, "binding": False}


def test_left_right_relation_and_margin():
    im, d = canvas()
    draw_shape(d, "triangle", (4, 20, 24, 40), PALETTE["yellow"])
    draw_shape(d, "circle", (40, 22, 58, 40), PALETTE["purple"])
    assert check(im, spec([("triangle", "yellow"), ("circle", "purple")], "left of")).full
    assert not check(im, spec([("triangle", "yellow"), ("circle", "purple")], "right of")).full
    # side by side at the same height is neither above nor below
    assert check(im, spec([("triangle", "yellow"), ("circle", "purple")], "above")).categories["position"] is False


def test_counts_by_connected_components():
    im, d = canvas()
    for x0 in (4, 24, 44):
        draw_shape(d, "circle", (x0, 8, x0 + 14, 22), PALETTE["black"])
    draw_shape(d, "square", (20, 40, 36, 56), PALETTE["red"])
    assert check(im, spec([("circle", "black", 3)])).full
    two = check(im, spec([("circle", "black", 2)]))
    assert two.categories["count"] is False and two.categories["binding"] is True
    # a single-object prompt is satisfied by any number of copies; the count category applies to counts > 1
    assert "count" not in check(im, spec([("circle", "black")])).categories
    both = check(im, spec([("circle", "black", 3), ("square", "red")]))
    assert both.full and both.categories["count"]


def test_robust_to_blur_noise_and_off_palette_colours():
    im, d = canvas()
    draw_shape(d, "circle", (8, 6, 28, 26), (200, 60, 50))  # not the palette red, still red
    draw_shape(d, "triangle", (34, 34, 58, 58), (60, 90, 200))
    im = im.filter(ImageFilter.GaussianBlur(0.8))
    noisy = np.asarray(im).astype(float) + np.random.default_rng(0).normal(0, 12, (64, 64, 3))
    im = Image.fromarray(noisy.clip(0, 255).astype(np.uint8))
    assert check(im, spec([("circle", "red"), ("triangle", "blue")], "above")).full


def test_blank_and_noise_images_satisfy_nothing():
    blank, _ = canvas()
    res = check(blank, BLUE_ABOVE_RED)
    assert not any(res.categories.values()) and res.blobs == ()
    rng = np.random.default_rng(1)
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert not check(noise, BLUE_ABOVE_RED).full


def test_drawer_satisfies_its_own_specs():
    specs = all_specs()
    assert len(specs) == 1431 and len({s.prompt() for s in specs}) == len(specs)
    picked = specs[::29]
    results = [check(draw(s, seed=i), s) for i, s in enumerate(picked)]
    assert all(r.full for r in results)
    summary = summarize(results)
    assert summary["full"] == 1.0 and summary["n"] == len(picked) and summary["n_position"] > 0
    assert summary["n_count"] > 0
    # same seed, same picture
    assert np.array_equal(np.asarray(draw(picked[3], 5)), np.asarray(draw(picked[3], 5)))


def test_summarize_per_category_over_applicable_prompts():
    im, d = canvas()
    draw_shape(d, "square", (22, 4, 40, 22), PALETTE["blue"])
    draw_shape(d, "circle", (24, 40, 42, 58), PALETTE["red"])
    checks = [check(im, BLUE_ABOVE_RED), check(im, SceneSpec(BLUE_ABOVE_RED.things, "below")),
              check(im, spec([("square", "blue")]))]
    s = summarize(checks)
    assert s["full"] == pytest.approx(2 / 3) and s["position"] == 0.5 and s["n_position"] == 2
    assert s["colour"] == 1.0 and np.isnan(s["count"]) and s["n_count"] == 0


def test_spec_round_trip_prompt_and_errors():
    s = SceneSpec.from_dict({"objects": [{"shape": "circle", "color": "blue"}, {"shape": "square", "colour": "red"}],
                             "relation": "above"})
    assert s.prompt() == "a blue circle above a red square"
    assert SceneSpec.from_dict(s.to_dict()) == s
    assert spec([("triangle", "green", 2)]).prompt() == "two green triangles"
    with pytest.raises(DataError, match=r"f.jsonl, line 3, field 'spec.objects\[0\].colour'"):
        SceneSpec.from_dict({"objects": [{"shape": "circle", "colour": "mauve"}]}, "f.jsonl", 3)
    with pytest.raises(DataError, match="relation"):
        SceneSpec.from_dict({"objects": [{"shape": "circle", "colour": "red", "count": 2},
                                         {"shape": "square", "colour": "red"}], "relation": "above"})
    with pytest.raises(DataError, match="count"):
        SceneSpec.from_dict({"objects": [{"shape": "circle", "colour": "red", "count": 9}]})


def test_jsonl_spec_goes_to_item_meta_not_query(tmp_path):
    f = tmp_path / "t2i.jsonl"
    good = {"prompt": "a blue circle above a red square", "spec": BLUE_ABOVE_RED.to_dict()}
    f.write_text(json.dumps(good) + "\n" + json.dumps({"prompt": "a cat"}) + "\n")
    items = read_jsonl(f)
    assert items[0].meta["spec"] == BLUE_ABOVE_RED.to_dict() and items[1].meta == {}
    assert not hasattr(items[0].query, "spec") and items[0].answer is None
    f.write_text(json.dumps(good) + "\n" + json.dumps({"prompt": "x", "spec": {"objects": [{"shape": "star",
                                                                                          "colour": "red"}]}}) + "\n")
    with pytest.raises(DataError, match=r"line 2, field 'spec.objects\[0\].shape'"):
        read_jsonl(f)


def test_scenes_task_source_is_fixed_and_keeps_specs_out_of_queries():
    from ttrl.tasks import load_dataset

    a = load_dataset("scenes:test", size=20, seed=3)
    b = load_dataset("scenes:test", {"sample_seed": 3}, size=20, seed=9)
    assert [i.query for i in a.items] == [i.query for i in b.items] and len(a.items) == 20
    full_test = load_dataset("scenes:test", size=0)
    train = load_dataset("scenes:train", size=0)
    assert len(full_test.items) == 300 and len(train.items) == 1431 - 300
    assert not {i.query.prompt for i in full_test.items} & {i.query.prompt for i in train.items}
    for it in a.items:
        assert SceneSpec.from_dict(it.meta["spec"]).prompt() == it.query.prompt and it.answer is None
    with pytest.raises(DataError, match="split"):
        load_dataset("scenes:dev")


def test_prompt_blind_shares_check_each_image_against_every_other_prompt(tmp_path):
    from ttrl.protocols.images import _blind_shares

    specs = {"a": spec([("circle", "red")]), "b": spec([("square", "red")]), "c": spec([("square", "blue")])}
    rows = []
    for k, sp in specs.items():
        im, d = canvas()
        draw_shape(d, sp.things[0].shape, (20, 20, 44, 44), PALETTE[sp.things[0].colour])
        assert check(im, sp).full  # each image satisfies its own prompt
        im.save(tmp_path / f"{k}.png")
        rows.append({"id": k, "images": [f"{k}.png"]})
    s = _blind_shares(rows, specs, tmp_path)
    # by hand, image vs other spec: a-b colour, b-a colour, b-c shape, c-b shape; a-c, c-a nothing: 2/6 each
    assert s["colour"] == pytest.approx(2 / 6) and s["shape"] == pytest.approx(2 / 6)
    assert s["binding"] == 0 and s["full"] == 0 and s["position"] is None
