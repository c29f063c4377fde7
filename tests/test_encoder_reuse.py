"""Whisper's encoder outputs reused between decodes (transcription.encoder_reuse): the same transcripts and
times as the encoder run afresh, each window encoded once, and never an output of weights that have changed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

SR = 16000


def clips() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(0, 0.1, int(s * SR)).astype(np.float32) for s in (1.0, 2.5, 0.7)]


def model_and_processor(tiny_whisper_dir):
    from asrtune.families import whisper

    return whisper.load_plain(tiny_whisper_dir).eval(), whisper.load_processor(tiny_whisper_dir)


def test_a_clips_encoder_output_does_not_depend_on_its_batch(tiny_whisper_dir):
    """What makes a stored output the one a fresh batch would give (so a reused transcript is the same bytes)."""
    from asrtune.families.shared import whisper_features

    model, processor = model_and_processor(tiny_whisper_dir)
    feats = whisper_features(processor, clips())
    with torch.no_grad():
        together = model.get_encoder()(input_features=feats).last_hidden_state
        for i in range(len(feats)):
            assert torch.equal(together[i], model.get_encoder()(input_features=feats[i : i + 1]).last_hidden_state[0])


def test_reused_outputs_give_the_same_transcripts_and_times_and_encode_each_window_once(tmp_path, tiny_whisper_dir):
    from asrtune import params
    from asrtune.families import whisper
    from asrtune.families.shared import max_new_tokens
    from asrtune.transcription.encoder_reuse import EncoderOutputs

    model, processor = model_and_processor(tiny_whisper_dir)
    audio = clips()
    for timestamps in (True, False):
        p = params.Params.model_construct(model=params.Model(), decode=params.Decode(timestamps=timestamps))
        reuse = EncoderOutputs(model.get_encoder(), "fp32", tmp_path / f"cache-{timestamps}")
        fresh = whisper.transcribe(model, processor, [], audio, p)
        if not timestamps:  # the encoder run apart and handed to generate() is generate() on the features
            feats = whisper.features(processor, audio)
            with torch.no_grad():
                ids = model.generate(feats, language="zh", task="transcribe", max_new_tokens=max_new_tokens(audio, p.decode),
                                     begin_suppress_tokens=whisper.begin_suppress(model))
            assert fresh == processor.batch_decode(ids, skip_special_tokens=True)
        assert whisper.transcribe(model, processor, [], audio, p, encode=reuse) == fresh
        assert (reuse.hits, reuse.misses) == (0, 3)
        # again, and a pass with context lists (one generate() per list): every window from the store
        assert whisper.transcribe(model, processor, [], audio, p, encode=reuse) == fresh
        contexts = [["阿莫西林"], None, ["布洛芬", "CT"]]
        assert (whisper.transcribe(model, processor, [], audio, p, contexts, encode=reuse)
                == whisper.transcribe(model, processor, [], audio, p, contexts))
        assert (reuse.hits, reuse.misses) == (6, 3)
        # another process (decode of another model with the same encoder) finds them on disk
        other = EncoderOutputs(model.get_encoder(), "fp32", tmp_path / f"cache-{timestamps}")
        assert whisper.transcribe(model, processor, [], audio[:2], p, encode=other) == fresh[:2]
        assert (other.hits, other.misses) == (2, 0)


def test_changed_weights_or_precision_are_never_served_a_stored_output(tmp_path, tiny_whisper_dir):
    """The sweep changes the weights in place between scales: an encoder that has changed is encoded afresh."""
    from asrtune.families.shared import whisper_features
    from asrtune.transcription.encoder_reuse import EncoderOutputs

    model, processor = model_and_processor(tiny_whisper_dir)
    feats = whisper_features(processor, clips()[:1])
    reuse = EncoderOutputs(model.get_encoder(), "fp32", tmp_path)
    before = reuse(feats)
    with torch.no_grad():
        model.get_encoder().layers[0].fc1.weight.mul_(1.5)
        after = reuse(feats)
        assert torch.equal(after, model.get_encoder()(input_features=feats).last_hidden_state)
    assert not torch.equal(before, after) and reuse.misses == 2
    # a tensor swapped for another (not changed in place) is seen too
    layer = model.get_encoder().layers[0].fc2
    layer.weight = torch.nn.Parameter(layer.weight.detach() * 2)
    with torch.no_grad():
        assert torch.equal(reuse(feats), model.get_encoder()(input_features=feats).last_hidden_state) and reuse.misses == 3
    other = EncoderOutputs(model.get_encoder(), "bf16", tmp_path)  # stored apart: another precision
    other(feats)
    assert other.misses == 1 and len(list(tmp_path.iterdir())) == 4  # a folder per (weights, what computes them)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the encoder runs every time")
def test_decode_stages_reuse_whisper_outputs_on_a_cpu_and_a_one_off_transcription_stores_nothing(tmp_path, monkeypatch,
                                                                                                 tiny_whisper_dir):
    from asrtune import params
    from asrtune.stages.decode import transcriber
    from asrtune.transcription import encoder_reuse

    made = []

    class Counted(encoder_reuse.EncoderOutputs):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(encoder_reuse, "EncoderOutputs", Counted)
    monkeypatch.setenv("ASRTUNE_CACHE", str(tmp_path))
    p = params.Params.model_construct(model=params.Model(), decode=params.Decode(timestamps=False))
    one_off, runtime = transcriber(p, tiny_whisper_dir, None)  # asrtune transcribe, cut: nothing kept
    assert "reused" not in runtime and not made
    first = one_off([], clips())
    assert not (tmp_path / "decode").exists()
    run, runtime = transcriber(p, tiny_whisper_dir, None, reuse=True)  # decode of models/base
    assert "encoder outputs reused" in runtime and run([], clips()) == first
    again, _ = transcriber(p, tiny_whisper_dir, None, reuse=True)  # decode of models/merged, same encoder
    assert again([], clips()) == first
    assert [(m.hits, m.misses) for m in made] == [(0, 3), (3, 0)]
    assert len(list((tmp_path / "decode").glob("*/*.pt"))) == 3
    bf16 = p.model_copy(update={"model": params.Model(precision="bf16")})
    assert "reused" not in transcriber(bf16, tiny_whisper_dir, None, reuse=True)[1]  # a CPU's bf16: other kernels
