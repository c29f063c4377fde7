"""Fun-ASR-Nano's official layout (model.pt + config.yaml + Qwen3-0.6B/) <-> transformers' FunAsrNano.

The layout directory is built from funasr's own `FunASRNano` (funasr 1.4.16, a dev dependency installed
without its heavy tree, see pyproject.toml) at toy size, with random weights stored in bf16 as the official
file stores them, plus a CTC head stored in fp32 as the ModelScope copy stores it. The parity tests then run
funasr's modules and transformers' port side by side and measure each by-design difference.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from asrtune.errors import UserError
from asrtune.testing import tiny_text_config, demo_texts, tiny_qwen_tokenizer, write_tiny_fun_asr_nano
from asrtune.weights.funasr_layout import CTC_FILE, is_funasr_dir, to_funasr, to_transformers

REPO = Path(__file__).resolve().parents[1]
SCALE = 32768  # funasr's WavFrontend upscales [-1, 1] audio to int16 range (upsacle_samples=True)
LOG_OFFSET = 2 * math.log(SCALE)  # ... which adds 2 ln 32768 = 20.79 to every (unfloored) log-mel power

# config.yaml of the toy model, the official file's structure at write_tiny_fun_asr_nano's sizes.
TINY_YAML = {
    "model": "FunASRNano",
    "model_conf": {"lsm_weight": 0.1, "length_normalized_loss": True},
    "audio_encoder": "SenseVoiceEncoderSmall",
    "audio_encoder_conf": {"output_size": 16, "attention_heads": 2, "linear_units": 32, "num_blocks": 2, "tp_blocks": 1,
                           "dropout_rate": 0.1, "positional_dropout_rate": 0.1, "attention_dropout_rate": 0.1,
                           "input_layer": "pe", "normalize_before": True, "kernel_size": 3, "sanm_shfit": 0,
                           "selfattention_layer_type": "sanm", "freeze": True},
    "llm": "Qwen3-0.6b",
    "llm_conf": {"hub": "hf", "freeze": True, "llm_dtype": "bf16", "init_param_path": "Qwen3-0.6B", "use_lora": False},
    "audio_adaptor": "Transformer",
    "audio_adaptor_conf": {"downsample_rate": 1, "use_low_frame_rate": True, "ffn_dim": 64, "llm_dim": 32, "encoder_dim": 16,
                           "n_layer": 2, "attention_heads": 2, "freeze": True},
    "frontend": "WavFrontend",
    "frontend_conf": {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25, "frame_shift": 10, "lfr_m": 7,
                      "lfr_n": 6, "cmvn_file": None},
    "train_conf": {"effective_save_name_excludes": ["llm."]},
}


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_qwen_tokenizer(demo_texts(REPO / "demo"))


def _funasr_model(qwen_dir: Path):
    """funasr's FunASRNano built from TINY_YAML (its constructor mutates the conf dicts: pass copies), random
    weights, eval mode, fp32 LLM, no CTC decoder (it would need a CTC tokenizer)."""
    from funasr.models.fun_asr_nano.model import FunASRNano

    cfg = json.loads(json.dumps(TINY_YAML))
    torch.manual_seed(0)
    model = FunASRNano(audio_encoder=cfg["audio_encoder"], audio_encoder_conf=cfg["audio_encoder_conf"],
                       audio_adaptor=cfg["audio_adaptor"], audio_adaptor_conf=cfg["audio_adaptor_conf"], llm="Qwen3",
                       llm_conf={"init_param_path": str(qwen_dir), "llm_dtype": "fp32", "freeze": False}, input_size=560)
    with torch.no_grad():  # perturb every tensor (LayerNorms included) so no mapping mistake hides behind 1/0 init
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
        model.llm.lm_head.weight = model.llm.model.embed_tokens.weight  # tied, as in Qwen3-0.6B
    return model.eval()


@pytest.fixture(scope="module")
def layout(tmp_path_factory, tokenizer):
    """(Fun-ASR layout dir, funasr model holding the same bf16-rounded weights)."""
    src = tmp_path_factory.mktemp("funasr") / "Fun-ASR-Nano-tiny"
    qwen = src / "Qwen3-0.6B"
    qwen.mkdir(parents=True)
    (qwen / "config.json").write_text(json.dumps(tiny_text_config(tokenizer)))
    tokenizer.save_pretrained(qwen)
    model = _funasr_model(qwen)
    state = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}  # model.pt holds bf16
    model.load_state_dict(state)  # the fp32 modules now hold the bf16-rounded values, as FunASR loads them
    g = torch.Generator().manual_seed(1)
    state |= {"ctc_decoder.linear1.weight": torch.randn(8, 16, generator=g), "ctc_decoder.linear1.bias": torch.randn(8, generator=g),
              "ctc.ctc_lo.weight": torch.randn(11, 16, generator=g), "ctc.ctc_lo.bias": torch.randn(11, generator=g)}  # fp32
    torch.save({"state_dict": state}, src / "model.pt")
    (src / "config.yaml").write_text(yaml.safe_dump(TINY_YAML, sort_keys=False), encoding="utf-8")
    return src, model


@pytest.fixture(scope="module")
def converted(layout, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf") / "model"
    summary = to_transformers(layout[0], out)
    return out, summary


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


# ---------------------------------------------------------------- converter


def test_round_trip_is_bit_identical(layout, converted, tmp_path):
    src, _ = layout
    hf, summary = converted
    assert is_funasr_dir(src) and not is_funasr_dir(hf)
    assert "CTC head (4 tensors) kept aside" in summary and "bfloat16" in summary
    from safetensors.torch import load_file
    assert {t.dtype for t in load_file(hf / "model.safetensors").values()} == {torch.bfloat16}  # not upcast

    back = tmp_path / "back"
    assert "CTC head (4 tensors) restored" in to_funasr(hf, back)
    original, exported = _state(src / "model.pt"), _state(back / "model.pt")
    assert exported.keys() == original.keys()
    for k, v in original.items():
        assert exported[k].dtype == v.dtype and torch.equal(exported[k], v), k
    assert exported["llm.lm_head.weight"].data_ptr() != exported["llm.model.embed_tokens.weight"].data_ptr()
    assert (back / "config.yaml").read_bytes() == (src / "config.yaml").read_bytes()
    assert json.loads((back / "Qwen3-0.6B" / "config.json").read_text())["hidden_size"] == 32
    assert not list((back / "Qwen3-0.6B").glob("*.safetensors"))  # config + tokenizer only, as the official dir


@pytest.mark.parametrize("wrap", ["bare", "model", "module"])
def test_wrappers_and_module_prefix_load_the_same_weights(layout, converted, tmp_path, wrap):
    from safetensors.torch import load_file

    src, _ = layout
    state = _state(src / "model.pt")
    variant = tmp_path / "src"
    shutil.copytree(src, variant)
    obj = {"bare": state, "model": {"model": state, "epoch": 3}, "module": {"state_dict": {f"module.{k}": v for k, v in state.items()}}}[wrap]
    torch.save(obj, variant / "model.pt")
    to_transformers(variant, tmp_path / "hf")
    expected, got = load_file(converted[0] / "model.safetensors"), load_file(tmp_path / "hf" / "model.safetensors")
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)
    assert load_file(tmp_path / "hf" / CTC_FILE).keys() == load_file(converted[0] / CTC_FILE).keys()


def _broken(src: Path, tmp_path: Path, edit) -> Path:
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    state = _state(src / "model.pt")
    edit(state)
    torch.save({"state_dict": state}, bad / "model.pt")
    return bad


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("audio_encoder.tp_encoders.0.self_attn.fsmn_block.weight"), "1 missing tensors (audio_encoder.tp_encoders.0.self_attn.fsmn_block.weight)"),
    (lambda s: s.pop("audio_adaptor.blocks.1.norm2.bias"), "missing tensors (audio_adaptor.blocks.1.norm2.bias)"),
    (lambda s: s.update({"audio_adaptor.blocks.2.norm1.weight": torch.zeros(32)}), "1 unknown tensors (audio_adaptor.blocks.2.norm1.weight)"),
    (lambda s: s.update({"audio_encoder.encoders.0.self_attn.linear_q_k_v.weight": torch.zeros(51, 16)}),
     "1 shapes unlike config.yaml (audio_encoder.encoders.0.self_attn.linear_q_k_v.weight (51, 16))"),
    (lambda s: s.update({"llm.model.norm.weight": torch.zeros(33)}), "(llm.model.norm.weight (33,))"),
    (lambda s: [s.pop(k) for k in list(s) if k.startswith("llm.")], "effective_save_name_excludes: [llm.]"),
])
def test_import_is_strict(layout, tmp_path, edit, message):
    with pytest.raises(UserError, match=r"model\.pt: .*" if "llm.]" in message else None) as e:
        to_transformers(_broken(layout[0], tmp_path, edit), tmp_path / "hf")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_not_a_funasr_dir(tmp_path):
    with pytest.raises(UserError, match="needs model.pt and config.yaml"):
        to_transformers(tmp_path, tmp_path / "hf")


def test_converted_dir_loads_with_transformers_alone_and_keeps_logits(tokenizer, tmp_path):
    """tiny transformers model -> Fun-ASR layout (config.yaml generated) -> transformers: same logits, and the
    directory loads through the Auto classes with nothing from asrtune."""
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

    origin = write_tiny_fun_asr_nano(tmp_path / "tiny", tokenizer)
    assert "config.yaml generated" in to_funasr(origin, tmp_path / "funasr")
    generated = yaml.safe_load((tmp_path / "funasr" / "config.yaml").read_text())
    assert generated["train_conf"]["effective_save_name_excludes"] == [] and "llm.lm_head.weight" in _state(tmp_path / "funasr" / "model.pt")
    assert "no CTC head" in to_transformers(tmp_path / "funasr", tmp_path / "hf")

    processor = AutoProcessor.from_pretrained(tmp_path / "hf")
    audio = [np.random.default_rng(0).standard_normal(n).astype(np.float32) * 0.1 for n in (8000, 5600)]
    prompts = processor.apply_transcription_request(audio, tokenize=False)
    inputs = processor(text=prompts, audio=audio, padding=True, return_tensors="pt")
    a = AutoModelForSpeechSeq2Seq.from_pretrained(origin).eval()
    b = AutoModelForSpeechSeq2Seq.from_pretrained(tmp_path / "hf").eval()
    assert type(b).__name__ == "FunAsrNanoForConditionalGeneration"
    with torch.no_grad():
        assert torch.equal(a(**inputs).logits, b(**inputs).logits)


# ---------------------------------------------------------------- parity with funasr's own model


def _audio() -> list[torch.Tensor]:
    """Two clips of different lengths (1.0 s and 0.62 s: 17 and 10 LFR frames), speech-like amplitude."""
    g = torch.Generator().manual_seed(0)
    return [torch.randn(n, generator=g) * 0.1 * torch.sin(torch.linspace(0, 20, n)) for n in (16000, 9920)]


def _frontend(**kwargs):
    from funasr.frontends.wav_frontend import WavFrontend

    return WavFrontend(**{**TINY_YAML["frontend_conf"], **kwargs})


def _funasr_features(frontend, audio):
    wav = torch.nn.utils.rnn.pad_sequence(audio, batch_first=True)
    return frontend(wav, torch.tensor([len(a) for a in audio]))


@pytest.fixture(scope="module")
def hf_model(converted):
    """The converted model in fp32. attn_implementation is passed explicitly: transformers 5.23 leaves the
    adaptor's `_attn_implementation` unset otherwise, its mask builder then returns no mask, and in a padded
    batch the adaptor attends to padding frames (test_encoder_and_adaptor_parity measures it)."""
    from transformers import AutoModelForSpeechSeq2Seq

    return AutoModelForSpeechSeq2Seq.from_pretrained(converted[0], dtype=torch.float32, attn_implementation="sdpa").eval()


def _max_diff(a, b, lens):
    return max((a[i, :n] - b[i, :n]).abs().max().item() for i, n in enumerate(lens))


def test_frontend_parity_up_to_the_int16_scale(converted):
    """funasr's WavFrontend multiplies the waveform by 32768 before fbank (transformers' extractor does not):
    every log-mel value moves by 2 ln 32768 = 20.79. With that scale applied to our input the features are
    equal; funasr's default dither (1.0, Gaussian noise in int16 units, at inference too) makes them random."""
    from transformers import AutoProcessor

    audio = _audio()
    ours = AutoProcessor.from_pretrained(converted[0]).feature_extractor
    feats, lens = _funasr_features(_frontend(dither=0.0), audio)
    plain = ours([a.numpy() for a in audio], return_tensors="pt")
    scaled = ours([a.numpy() * SCALE for a in audio], return_tensors="pt")
    assert lens.tolist() == plain["input_features_mask"].sum(-1).tolist() == [17, 10]
    without_scale, with_scale = _max_diff(feats, plain["input_features"], lens), _max_diff(feats, scaled["input_features"], lens)
    print(f"frontend max |diff|: without the x32768 scale {without_scale:.4f}, with it {with_scale:.2e}")
    assert abs(without_scale - LOG_OFFSET) < 1e-3 and with_scale < 1e-5
    assert torch.allclose(feats[0, :17] - LOG_OFFSET, plain["input_features"][0, :17], atol=1e-3)  # a constant shift

    dithered = _frontend()
    assert dithered.dither == 1.0  # funasr's default: the config.yaml sets no dither
    a, b = _funasr_features(dithered, audio)[0], _funasr_features(dithered, audio)[0]
    print(f"funasr dither 1.0: two runs on the same audio differ by up to {(a - b).abs().max():.4f}")
    assert (a - b).abs().max() > 1e-3


def test_encoder_and_adaptor_parity(layout, hf_model, converted):
    """Same features in, same encoder output at valid frames (the x32768 shift cancels in the first LayerNorm,
    which sees x*sqrt(d)+PE with no residual); adaptor output equal up to the LayerNorm eps (funasr's adaptor
    uses 1e-12, transformers 1e-5): measured both ways. Also measured: loading without an explicit
    attn_implementation (transformers 5.23) leaves the adaptor unmasked, which changes the padded clip."""
    from transformers import AutoModelForSpeechSeq2Seq

    _, fa = layout
    audio = _audio()
    feats, lens = _funasr_features(_frontend(dither=0.0), audio)
    mask = (torch.arange(feats.shape[1])[None] < lens[:, None]).long()
    tower, projector = hf_model.model.audio_tower, hf_model.model.multi_modal_projector
    with torch.no_grad():
        enc_fa, enc_lens = fa.audio_encoder(feats.clone(), lens.clone())  # it scales its input in place: a clone
        enc_hf = tower(feats, mask).last_hidden_state
        enc_unscaled = tower(feats - LOG_OFFSET, mask).last_hidden_state  # transformers' own (unscaled) features
        enc_diff, scale_effect = _max_diff(enc_fa, enc_hf, lens), _max_diff(enc_hf, enc_unscaled, lens)
        adp_fa, _ = fa.audio_adaptor(enc_fa, enc_lens)
        adp_eps5 = projector(enc_fa, mask)
        for layer in projector.layers:
            layer.input_layernorm.eps = layer.post_attention_layernorm.eps = 1e-12
        adp_eps12 = projector(enc_fa, mask)
        for layer in projector.layers:
            layer.input_layernorm.eps = layer.post_attention_layernorm.eps = 1e-5
        default = AutoModelForSpeechSeq2Seq.from_pretrained(converted[0], dtype=torch.float32).eval().model
        unmasked = default.multi_modal_projector(enc_fa, mask)
    d5, d12 = _max_diff(adp_fa, adp_eps5, lens), _max_diff(adp_fa, adp_eps12, lens)
    print(f"adaptor loaded without attn_implementation: max |diff| full clip {_max_diff(adp_fa, unmasked, lens[:1]):.2e}, "
          f"padded clip {_max_diff(adp_fa[1:], unmasked[1:], lens[1:]):.2e} (adaptor config _attn_implementation: "
          f"{default.config.adaptor_config._attn_implementation})")
    print(f"encoder max |diff| {enc_diff:.2e} (effect of the x32768 scale on it: {scale_effect:.2e}); "
          f"adaptor max |diff| with eps 1e-5 {d5:.2e}, with funasr's 1e-12 {d12:.2e} (|adaptor out| max {adp_fa.abs().max():.1f})")
    assert enc_diff < 1e-5 and scale_effect < 1e-4
    assert d12 < 1e-5 and d5 < 1e-4 and d12 < d5


def _fake_token_len(n: int) -> int:
    """funasr's count of LLM audio tokens for n adaptor frames (fun_asr_nano/model.py): ceil(n / 8)."""
    olens = 1 + (n - 3 + 2) // 2
    olens = 1 + (olens - 3 + 2) // 2
    return (olens - 1) // 2 + 1


def _batch(tokenizer, n_audio: list[int]):
    """A hand-built, right-padded training batch: ChatML prompt with n audio placeholders, then the target."""
    audio_id = tokenizer.convert_tokens_to_ids("<|object_ref_start|>")
    rows, begs = [], []
    for n, target in zip(n_audio, ["今天天气很好", "hello world"]):
        head = tokenizer.encode("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n语音转写：")
        tail = tokenizer.encode("<|im_end|>\n<|im_start|>assistant\n")
        answer = tokenizer.encode(target + "<|im_end|>")
        ids = head + [audio_id] * n + tail + answer
        rows.append((ids, [-100] * (len(ids) - len(answer)) + answer))
        begs.append(len(head))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    return input_ids, labels, attention, torch.tensor(begs)[:, None]


def test_training_loss_parity(layout, hf_model, tokenizer, converted):
    """funasr's FunASRNano.forward loss on a batch of two clips (17 and 10 frames) equals the loss of
    transformers' model given the same ceil(L/8) audio embeddings (funasr's `fake_token_len`: 3 and 2).
    By design transformers' processor feeds all L valid frames instead (17 and 10 placeholders)."""
    from transformers import AutoProcessor

    _, fa = layout
    audio = _audio()
    feats, lens = _funasr_features(_frontend(dither=0.0), audio)
    n_tokens = [_fake_token_len(n) for n in lens.tolist()]
    assert n_tokens == [math.ceil(n / 8) for n in lens.tolist()] == [3, 2]
    processor = AutoProcessor.from_pretrained(converted[0])
    full = processor(text=processor.apply_transcription_request(audio, tokenize=False), audio=[a.numpy() for a in audio], padding=True)
    assert (full["input_ids"] == hf_model.config.audio_token_id).sum(-1).tolist() == lens.tolist()  # all L frames

    input_ids, labels, attention, begs = _batch(tokenizer, n_tokens)
    with torch.no_grad():
        loss_fa, _, _ = fa(speech=feats.clone(), speech_lengths=lens.clone(), input_ids=input_ids.clone(),
                           attention_mask=attention.clone(), labels_ids=labels.clone(), fbank_beg=begs.clone(),
                           fake_token_len=torch.tensor(n_tokens)[:, None])  # forward mutates its inputs: clones

        def ours(eps: float, with_audio: bool = True) -> float:
            model = hf_model.model
            for layer in model.multi_modal_projector.layers:
                layer.input_layernorm.eps = layer.post_attention_layernorm.eps = eps
            mask = (torch.arange(feats.shape[1])[None] < lens[:, None]).long()
            audio_embeds = model.multi_modal_projector(model.audio_tower(feats, mask).last_hidden_state, mask)
            embeds = model.get_input_embeddings()(input_ids)
            for i, (beg, n) in enumerate(zip(begs[:, 0].tolist(), n_tokens) if with_audio else []):
                embeds[i, beg : beg + n] = audio_embeds[i, :n]  # the first ceil(L/8) frames, as funasr does
            return hf_model(inputs_embeds=embeds, attention_mask=attention, labels=labels).loss.item()

        loss_eps5, loss_eps12 = ours(1e-5), ours(1e-12)
        no_audio = ours(1e-5, with_audio=False)  # (eps back to 1e-5) the audio embeddings do move the loss
    d5, d12 = abs(loss_fa.item() - loss_eps5), abs(loss_fa.item() - loss_eps12)
    print(f"training loss: funasr {loss_fa.item():.6f}; transformers differs by {d5:.1e} (adaptor eps 1e-5), {d12:.1e} (1e-12)")
    assert d12 < 1e-5 and d5 < 1e-5 and abs(loss_fa.item() - no_audio) > 1e-3


def test_pipeline_export_gives_back_every_tensor_the_ctc_head_and_config(layout, data_repo, tmp_path):
    """base -> finetune (adaptor fully, LoRA on the LLM) -> merge -> export, from a Fun-ASR directory with a CTC
    head: model.pt has every key of the source's, in the source's dtype, the CTC head byte-equal, config.yaml
    byte-identical, and the fine-tuning in it."""
    from conftest import in_process, params_for

    from asrtune.stages import base, export, finetune, merge

    src = layout[0]
    repo = tmp_path / "repo"
    shutil.copytree(data_repo, repo, ignore=shutil.ignore_patterns(".cache", "finetune", "plots", "base"))
    params_for(repo, src, **{"train.freeze_adaptor": False, "mix.stages": {"s1": {"general": 0.5}},
                             "train.stages": {"s1": {"init": "models/base", "epochs": 1, "learning_rate": 1e-2}}})
    in_process(repo, base)
    in_process(repo, finetune, "s1")
    in_process(repo, merge)
    summary = in_process(repo, export)
    assert "CTC head (4 tensors) restored" in summary and "config.yaml carried over" in summary
    out = repo / "models/export/funasr"
    original, exported = _state(src / "model.pt"), _state(out / "model.pt")
    assert exported.keys() == original.keys()
    assert {k: v.dtype for k, v in exported.items()} == {k: v.dtype for k, v in original.items()}
    for k in original:
        if k.startswith(("ctc_decoder.", "ctc.")):
            assert torch.equal(exported[k], original[k]), k
    assert (out / "config.yaml").read_bytes() == (src / "config.yaml").read_bytes()
    assert any(not torch.equal(exported[k], original[k]) for k in original if k.startswith("audio_adaptor."))
    assert any(not torch.equal(exported[k], original[k]) for k in original if k.startswith("llm."))
    assert (out / "model.pt").stat().st_size < 1.2 * (src / "model.pt").stat().st_size  # bf16 as released, not float32
