"""Speech data: the JSONL `audio` field, the shipped speech:test task, and audio loading errors."""
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ttrl.data import DataError, read_jsonl
from ttrl.media import AudioError, load_audio
from ttrl.tasks import load_dataset

CLIP = Path(__file__).parent / "data" / "speech" / "sense_and_sensibility_0890.flac"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_audio_field_relative_to_the_file(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [
        {"prompt": "Transcribe.", "audio": "a.wav", "answer": "hi"},
        {"prompt": "Transcribe.", "audio": ["/abs/b.flac", "c.flac"]},
        {"prompt": "no audio"},
    ])
    items = read_jsonl(f)
    assert items[0].query.audio == (str(tmp_path / "a.wav"),)
    assert items[1].query.audio == ("/abs/b.flac", str(tmp_path / "c.flac"))
    assert items[2].query.audio == ()


@pytest.mark.parametrize("bad", [3, ["a.wav", 1], {"path": "a.wav"}])
def test_jsonl_bad_audio_type_names_line_and_field(tmp_path, bad):
    f = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "ok"}, {"prompt": "Transcribe.", "audio": bad}])
    with pytest.raises(DataError, match=r"d\.jsonl, line 2, field 'audio': expected a string or a list of strings"):
        read_jsonl(f)


def test_speech_task_ships_paired_shifts():
    data = load_dataset("speech:test", {}, size=0)
    shifts = Counter(it.meta["shift"] for it in data.items)
    assert set(shifts) == {"clean", "white20", "white10", "babble10", "fast_reverb"}
    assert len(set(shifts.values())) == 1  # every sentence under every shift
    for it in data.items:
        assert len(it.query.audio) == 1 and Path(it.query.audio[0]).is_file() and it.answer
    clean = load_dataset("speech:test", {"shift": "clean"}, size=0)
    noisy = load_dataset("speech:test", {"shift": "white10"}, size=0)
    assert [it.answer for it in clean.items] == [it.answer for it in noisy.items]
    sub = load_dataset("speech:test", {"shift": "clean", "sample_seed": 3}, size=5)
    assert len(sub.items) == 5 and [it.query.id for it in sub.items] == sorted(it.query.id for it in sub.items)
    audio = load_audio(clean.items[0].query.audio[0])
    assert audio.dtype == np.float32 and 1.0 < len(audio) / 16000 < 15.0


def test_speech_task_rejects_unknown_args():
    with pytest.raises(DataError, match="shift"):
        load_dataset("speech:test", {"shift": "underwater"})
    with pytest.raises(DataError, match="one split"):
        load_dataset("speech:train", {})


def test_load_audio_resamples_and_downmixes(tmp_path):
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)
    sf.write(tmp_path / "t.wav", np.stack([tone, tone], 1), 8000)  # 1 s stereo at 8 kHz
    audio = load_audio(tmp_path / "t.wav")
    assert audio.shape == (16000,) and abs(float(np.abs(audio).max()) - 0.3) < 0.02
    real = load_audio(CLIP)
    assert len(real) == 84800  # the clip is already 16 kHz


def test_load_audio_errors_name_the_file(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.flac").write_text("not audio")
    sf.write(tmp_path / "silent.wav", np.zeros(16000), 16000)
    cases = {"missing.wav": "no such audio file", "empty.wav": "empty file", "text.flac": "cannot decode",
             "silent.wav": "silent"}
    for name, msg in cases.items():
        with pytest.raises(AudioError, match=msg) as e:
            load_audio(tmp_path / name)
        assert name in str(e.value)
