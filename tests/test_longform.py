"""The longform stage on data_repo's tiny eSpeak demo: recordings built from the test speakers' clips (deterministic,
within their bounds, the clips' samples at their offsets, pauses of silence between), transcribed by `asrtune
transcribe`'s code with the tiny random Whisper, and scored beside decode's per-clip hypotheses of the same clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import in_process, params_for, read_jsonl

SR = 16000
CORPORA = ["general", "medical"]


def _texts(repo: Path, corpus: str) -> dict[str, str]:
    return {r["key"]: r["messages"][2]["content"] for r in read_jsonl(repo / f"data/split/{corpus}/test.jsonl")}


def _decode_output(repo: Path) -> None:
    """data/decode/<m>/<c>.tsv in decode's format (key<TAB>transcript, in key order): base drops each clip's last two
    characters; merged is exact but for its first clip, missing (scored as deletions), and a substituted character."""
    for corpus in CORPORA:
        refs = sorted(_texts(repo, corpus).items())
        hyps = {"base": [(k, t[:-2]) for k, t in refs],
                "merged": [(k, "错" + t[1:] if i == 1 else t) for i, (k, t) in enumerate(refs) if i]}
        for model, lines in hyps.items():
            out = repo / f"data/decode/{model}/{corpus}.tsv"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("".join(f"{k}\t{t}\n" for k, t in lines), encoding="utf-8")


def _repo(path: Path, data_repo: Path, tiny_whisper_dir: Path, **overrides) -> Path:
    path.mkdir()
    for d in ("data/ingest", "data/split", "models/base"):
        (path / d).parent.mkdir(parents=True, exist_ok=True)
        (path / d).symlink_to(data_repo / d)
    (path / "models/merged").symlink_to(data_repo / "models/base")  # a "merged" model: the tiny base again
    _decode_output(path)
    params_for(path, tiny_whisper_dir, **{"longform.corpora": CORPORA, **overrides})
    return path


def _longest_clip(data_repo: Path) -> float:
    return max(sf.info(data_repo / r["audio"]).duration for c in CORPORA for r in read_jsonl(data_repo / f"data/ingest/{c}/manifest.jsonl"))


def _outputs(repo: Path) -> dict[str, bytes]:
    return {f.relative_to(repo).as_posix(): f.read_bytes() for f in sorted((repo / "data/longform").rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def runs(data_repo, tiny_whisper_dir, tmp_path_factory):
    """The stage run twice on the same inputs: with the tiny random Whisper, then with a perfect "model" (transcribe_file
    gives each recording its reference). Recordings of at most 2.2 longest clips, so that speakers get several."""
    from asrtune.stages import longform
    from asrtune.transcription import transcribe

    limits = {"longform.max_seconds": round(2.2 * _longest_clip(data_repo), 2), "longform.min_seconds": 0.0}
    repo = _repo(tmp_path_factory.mktemp("longform") / "r", data_repo, tiny_whisper_dir, **limits)
    printed = in_process(repo, longform)
    first = _outputs(repo)
    metrics = json.loads((repo / "metrics/longform.json").read_text(encoding="utf-8"))

    def perfect(path, run_model, p, terms):
        """Every unit heard right, at the time eSpeak spoke it (the clips' reference timestamps), and real VAD."""
        from asrtune.corpus.chatml import key_for
        from asrtune.corpus.timestamps import units
        from asrtune.transcription import vad

        rec = {m["audio"]: m for m in read_jsonl(Path("data/longform/manifest.jsonl"))}[Path(path).as_posix()]
        ingest = {key_for(rec["corpus"], r["id"]): r for r in read_jsonl(Path(f"data/ingest/{rec['corpus']}/manifest.jsonl"))}
        heard = []
        for key, offset, (first, _) in zip(rec["keys"], rec["offsets"], rec["spans"]):
            heard += [[u, round(offset - first + a, 3), round(offset - first + b, 3)]
                      for u, (a, b) in zip(units(ingest[key]["text"]), ingest[key]["timestamps"])]
        audio = sf.read(path, dtype="float32")[0]
        duration = len(audio) / SR
        return transcribe.Result(Path(path), duration, [transcribe.Piece(0, int(duration * 1000), rec["text"], heard)],
                                 vad.speech_probs(audio))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(transcribe, "transcribe_file", perfect)
        in_process(repo, longform)
    return {"repo": repo, "printed": printed, "first": first, "metrics": metrics, "limits": limits,
            "second": _outputs(repo), "perfect": json.loads((repo / "metrics/longform.json").read_text(encoding="utf-8"))}


def test_recordings_are_the_speakers_clips_in_order_with_pauses(runs, data_repo):
    from asrtune.stages.longform import speech_span

    repo, limits = runs["repo"], runs["limits"]
    manifest = read_jsonl(repo / "data/longform/manifest.jsonl")
    for corpus in CORPORA:
        texts = _texts(data_repo, corpus)
        speaker = {f"{corpus}-{r['id']}": r["speaker"] for r in read_jsonl(data_repo / f"data/ingest/{corpus}/manifest.jsonl")}
        mine = [m for m in manifest if m["corpus"] == corpus]
        assert [k for m in mine for k in m["keys"]] == sorted(texts, key=lambda k: (speaker[k], k))  # each test clip once
        assert any(len(m["keys"]) > 1 for m in mine) and len(mine) > len({m["speaker"] for m in mine})  # joined, and split
        for m in mine:
            assert {speaker[k] for k in m["keys"]} == {m["speaker"]}
            assert m["text"] == " ".join(texts[k] for k in m["keys"])
            audio, rate = sf.read(repo / m["audio"], dtype="int16")
            assert rate == SR and len(audio) == round(m["duration"] * SR) and m["duration"] <= limits["longform.max_seconds"]
            starts, ends = [round(x * SR) for x in m["offsets"]], [round(x * SR) for x in m["ends"]]
            assert starts[0] == 0 and ends[-1] == len(audio)
            for i, k in enumerate(m["keys"]):
                clip = sf.read(data_repo / f"data/ingest/{corpus}/audio/{k.removeprefix(corpus + '-')}.wav", dtype="int16")[0]
                first, last = (round(x * SR) for x in m["spans"][i])
                assert (first, last) == speech_span(clip) and last - first > len(clip) / 2
                assert np.array_equal(audio[starts[i] : ends[i]], clip[first:last]), k  # the clip's own samples, edges trimmed
                if i:
                    pause = audio[ends[i - 1] : starts[i]]
                    assert 0.3 * SR - 1 <= len(pause) <= 1.5 * SR + 1 and not pause.any()


def test_the_same_inputs_give_the_same_recordings(runs):
    first, second = runs["first"], runs["second"]
    audio = [f for f in first if f.endswith(".wav")]
    assert audio and {f: first[f] for f in audio} == {f: second[f] for f in audio}
    assert first["data/longform/manifest.jsonl"] == second["data/longform/manifest.jsonl"]


def test_metrics_beside_the_per_clip_cer_of_the_same_clips(runs, data_repo):
    from asrtune import params
    from asrtune.evaluation.normalization import normalize
    from asrtune.evaluation.scoring import Counts, align

    repo, metrics = runs["repo"], runs["metrics"]
    opts = params.Normalize()
    assert {"cer", "cer_ci95", "clip_cer", "clip_cer_ci95", "difference", "difference_ci95", "change", "change_ci95",
            "clip_change", "recordings", "clips", "n", "segments", "breakdown", "note"} <= set(metrics)
    for corpus in CORPORA:
        texts = _texts(data_repo, corpus)
        assert metrics["clips"][corpus] == len(texts) and metrics["n"][corpus] == metrics["n_clip"][corpus]
        for model in ("base", "merged"):
            hyps = dict(line.split("\t") for line in (repo / f"data/decode/{model}/{corpus}.tsv").read_text(encoding="utf-8").splitlines())
            total = Counts()
            for k, t in texts.items():
                total.add(align(k, normalize(t, opts), normalize(hyps.get(k, ""), opts)).counts)
            assert metrics["clip_cer"][corpus][model] == round(total.rate, 4) > 0
            ci = metrics["cer_ci95"][corpus][model]
            assert ci["lo"] <= ci["hi"] and metrics["difference"][corpus][model] == pytest.approx(
                metrics["cer"][corpus][model] - metrics["clip_cer"][corpus][model], abs=2e-4)
    rows = (repo / "data/longform/recordings.tsv").read_text(encoding="utf-8").splitlines()
    assert rows[0].split("\t")[:6] == ["corpus", "recording", "speaker", "seconds", "clips", "model"]
    assert len(rows) == 1 + 2 * sum(metrics["recordings"].values())
    assert "long-form CER" in runs["printed"] and "merged - base" in runs["printed"]


def test_a_perfect_model_scores_zero_on_long_audio(runs):
    perfect, metrics = runs["perfect"], runs["metrics"]
    for corpus in CORPORA:
        assert perfect["cer"][corpus] == {"base": 0.0, "merged": 0.0}
        assert perfect["clip_cer"][corpus] == metrics["clip_cer"][corpus]  # decode's hypotheses, unchanged
        assert perfect["difference"][corpus]["base"] == -perfect["clip_cer"][corpus]["base"]


def test_asrtune_cut_on_the_recordings_keeps_what_was_heard_and_cuts_at_the_true_pauses(runs):
    """With their joined references as plain transcripts: the perfect model's recordings are cut at every join of two
    clips (each clip a sentence), all kept, each cut within 100 ms of the true silence; the tiny random Whisper heard
    nothing of the text: every piece rejected as a mismatch, every transcript unit still accounted for."""
    perfect, metrics = runs["perfect"], runs["metrics"]
    for corpus in CORPORA:
        for m in ("base", "merged"):
            c = perfect["cutting"][corpus][m]
            assert c["joins"] > 0 and c["joins_cut"] == c["joins"] and c["cuts"] == c["joins"]
            assert c["kept"] == c["pieces"] and c["rejected"] == {} and c["kept_units"] == c["units"]
            assert c["measured_cuts"] == c["cuts"] and c["cuts_within_100ms"] == 1.0
            assert 0.8 < c["kept_share"] <= 1.0
            garbage = metrics["cutting"][corpus][m]
            assert garbage["kept"] == 0 and garbage["kept_units"] == 0 and garbage["units"] == c["units"]
            assert set(garbage["rejected"]) <= {"mismatch", "no_speech", "too_long"} and sum(garbage["rejected"].values()) == garbage["pieces"]
    assert "asrtune cut, base: kept" in runs["printed"]


def test_a_clips_silent_edges_are_trimmed_to_50_ms():
    from asrtune.stages.longform import speech_span

    rng = np.random.default_rng(0)
    tone = (8000 * np.sin(np.arange(SR) * 2 * np.pi * 440 / SR)).astype(np.int16)
    floor = rng.normal(0, 20, 3 * SR).astype(np.int16)  # a noise floor 52 dB under the tone
    clip = np.concatenate([floor[:SR // 2], tone, floor[SR // 2 : SR]])
    assert speech_span(clip) == (SR // 2 - SR // 20, SR // 2 + SR + SR // 20)
    assert speech_span(np.zeros(SR, dtype=np.int16)) == (0, SR)  # all silence: kept whole


def test_recordings_stay_within_their_bounds():
    from asrtune.stages.longform import plan

    rng = np.random.default_rng(0)
    longest, shortest = 180 * SR, 60 * SR
    for _ in range(300):
        n = int(rng.integers(1, 60))
        durations = [int(x) for x in rng.uniform(1, 30, n) * SR]
        pauses = [int(x) for x in rng.uniform(0.3, 1.5, n) * SR]
        groups = plan(durations, pauses, longest, shortest)
        assert [i for g in groups for i in g] == list(range(n))
        lengths = [sum(durations[i] for i in g) + sum(pauses[i] for i in g[1:]) for g in groups]
        assert all(x <= longest for x in lengths)
        assert len(groups) == 1 or all(x >= shortest for x in lengths), lengths


def test_no_corpora_writes_a_note_and_missing_inputs_name_the_stage(data_repo, tiny_whisper_dir, tmp_path):
    from asrtune.errors import UserError
    from asrtune.stages import longform

    repo = _repo(tmp_path / "r", data_repo, tiny_whisper_dir, **{"longform.corpora": []})
    assert "longform.corpora is empty" in in_process(repo, longform)
    assert set(json.loads((repo / "metrics/longform.json").read_text())) == {"note"}
    params_for(repo, tiny_whisper_dir, **{"longform.corpora": CORPORA})
    (repo / "data/decode/merged/medical.tsv").unlink()
    with pytest.raises(UserError, match=r"decode/merged/medical.tsv: not found \(run `dvc repro decode@merged-medical` first\)"):
        in_process(repo, longform)
    (repo / "models/merged").unlink()
    with pytest.raises(UserError, match=r"models/merged: not found \(run `dvc repro merge` first\)"):
        in_process(repo, longform)
    params_for(repo, tiny_whisper_dir, **{"longform.corpora": ["medical", "elsewhere"]})
    with pytest.raises(UserError, match="longform.corpora: elsewhere is not a corpus of data.corpora"):
        in_process(repo, longform)
