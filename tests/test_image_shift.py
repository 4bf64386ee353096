"""Test-time image shifts (tasks/image_shift.py) and easyvqa's shift task_args: hand-computed pixel values,
determinism, and clear errors."""
import numpy as np
import pytest
from PIL import Image

from ttrl.data import DataError
from ttrl.tasks import load_dataset
from ttrl.tasks.image_shift import SHIFTS, shift_image, shifted_paths


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TTRL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _image(tmp_path, name="a.png"):
    a = np.zeros((4, 4, 3), np.uint8)
    a[:2] = 255  # top half white, bottom half black: mean 127.5 per channel
    path = tmp_path / name
    Image.fromarray(a).save(path)
    return str(path)


def test_contrast_pulls_pixels_to_the_mean_by_the_factor(tmp_path):
    out = np.asarray(shift_image(_image(tmp_path), "contrast", 0.3))
    # 1.0 -> 0.5 + 0.5 * 0.3 = 0.65 -> 166; 0.0 -> 0.35 -> 89
    assert (out[:2] == 166).all() and (out[2:] == 89).all()
    assert (np.asarray(shift_image(_image(tmp_path), "contrast", 1.0))[:2] == 255).all()


def test_saltpepper_sets_about_the_share_to_black_or_white(tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(np.full((100, 100, 3), 128, np.uint8)).save(path)
    out = np.asarray(shift_image(str(path), "saltpepper", 0.4))[..., 0]
    changed = np.isin(out, (0, 255)).mean()
    assert 0.35 < changed < 0.45 and ((out == 128) | np.isin(out, (0, 255))).all()


def test_noise_is_seeded_by_the_file_name(tmp_path):
    a, b = _image(tmp_path, "x.png"), _image(tmp_path, "y.png")
    first, again = (np.asarray(shift_image(a, "noise", 0.2)) for _ in range(2))
    assert (first == again).all()
    assert (first != np.asarray(shift_image(b, "noise", 0.2))).any()


def test_every_shift_keeps_size_and_mode(tmp_path):
    for name in SHIFTS:
        im = shift_image(_image(tmp_path), name, 0.5)
        assert im.size == (4, 4) and im.mode == "RGB"


def test_shifted_paths_render_once_into_the_cache(tmp_path, cache):
    src = _image(tmp_path)
    (out,) = shifted_paths([src], "t", "contrast", 0.3)
    assert out.startswith(str(cache)) and "t-contrast-0.3" in out
    mtime = (cache / "shifted" / "t-contrast-0.3" / "a.png").stat().st_mtime_ns
    assert shifted_paths([src], "t", "contrast", 0.3) == [out]
    assert (cache / "shifted" / "t-contrast-0.3" / "a.png").stat().st_mtime_ns == mtime


def test_easyvqa_shift_changes_only_the_images(cache):
    plain = load_dataset("easyvqa:test", {"sample_seed": 0}, 6)
    shifted = load_dataset("easyvqa:test", {"sample_seed": 0, "shift": "blur", "severity": 2}, 6)
    assert shifted.name == "easyvqa:test:all:blur2"
    assert [(i.query.id, i.query.prompt, i.answer) for i in plain.items] == \
        [(i.query.id, i.query.prompt, i.answer) for i in shifted.items]
    for p, s in zip(plain.items, shifted.items):
        a, b = (np.asarray(Image.open(x.query.images[0]).convert("RGB")) for x in (p, s))
        assert a.shape == b.shape and (a != b).any()


@pytest.mark.parametrize("args", [{"shift": "fog", "severity": 1}, {"shift": "blur"}, {"shift": "blur", "severity": "x"}])
def test_easyvqa_bad_shift_names_the_field(args, cache):
    with pytest.raises(DataError, match="task_args.*shift must be one of"):
        load_dataset("easyvqa:test", args, 3)
