"""The Fun-ASR-Nano architecture in plain transformers: audio encoder (a Whisper encoder), adaptor
(stack k encoder frames, MLP, optional small transformer), and any causal LM. The adaptor's
outputs replace the audio positions of the LLM's input embeddings (ChatML prompt around them).

Only the encoder frames that hold audio are used (Whisper pads every clip to 30 s): a 4 s clip
gives 200 frames and 200/k audio tokens, not 1500/k. One `save_pretrained` holds every weight
(encoder, adaptor, LLM): nothing is lost on reload, unlike Fun-ASR's shipped config.
"""

from __future__ import annotations

import math

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PreTrainedConfig, PreTrainedModel
from transformers.configuration_utils import SubConfigSpec
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.whisper.modeling_whisper import WhisperEncoder

HOP = 160  # Whisper features: 10 ms per mel frame at 16 kHz; the encoder halves it (20 ms per frame)


def encoder_frames(num_samples: int) -> int:
    """Encoder output frames that hold audio for a clip of `num_samples` at 16 kHz."""
    return max(1, math.ceil((num_samples // HOP) / 2))


def audio_tokens(num_samples: int, stride: int) -> int:
    """Audio embeddings the LLM sees for the clip: one per `stride` encoder frames."""
    return math.ceil(encoder_frames(num_samples) / stride)


@strict
class SpeechLLMConfig(PreTrainedConfig):
    model_type = "asrtune_speechllm"
    sub_configs_defaults = {
        "encoder_config": SubConfigSpec(config_class=AutoConfig, model_type="whisper"),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen3"),
    }

    encoder_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    adaptor_stride: int = 5  # k encoder frames (20 ms each) per audio token
    adaptor_hidden: int = 2048  # the MLP's hidden size
    adaptor_layers: int = 2  # transformer blocks after the MLP (0 = MLP only)
    adaptor_heads: int = 8
    adaptor_ffn: int = 256


class Adaptor(nn.Module):
    """k stacked encoder frames -> Linear -> ReLU -> Linear (LLM width) -> transformer blocks."""

    def __init__(self, config: SpeechLLMConfig):
        super().__init__()
        d_in = config.encoder_config.d_model * config.adaptor_stride
        d_out = config.text_config.hidden_size
        self.linear1 = nn.Linear(d_in, config.adaptor_hidden)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(config.adaptor_hidden, d_out)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(d_out, config.adaptor_heads, config.adaptor_ffn, dropout=0.0, batch_first=True)
            for _ in range(config.adaptor_layers)
        )

    def forward(self, stacked: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        x = self.linear2(self.relu(self.linear1(stacked)))
        for block in self.blocks:
            x = block(x, src_key_padding_mask=~valid)
        return x


class SpeechLLM(PreTrainedModel):
    config_class = SpeechLLMConfig
    base_model_prefix = "speechllm"
    main_input_name = "input_ids"
    _supports_sdpa = True
    supports_gradient_checkpointing = True  # its encoder and LLM layers checkpoint themselves
    _no_split_modules = ["WhisperEncoderLayer", "Qwen3DecoderLayer"]

    def __init__(self, config: SpeechLLMConfig):
        super().__init__(config)
        self.encoder = WhisperEncoder(config.encoder_config)
        self.adaptor = Adaptor(config)
        self.llm = AutoModelForCausalLM.from_config(config.text_config)
        self.frozen: set[str] = set()  # parts that stay in eval mode while training (no dropout)
        self.post_init()

    def _init_weights(self, module):
        if any(module is m for m in self.adaptor.modules()):
            self.init_adaptor(module)

    @staticmethod
    def init_adaptor(module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):
            nn.init.xavier_uniform_(module.in_proj_weight)
            nn.init.zeros_(module.in_proj_bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.frozen:
            getattr(self, name).eval()
        return self

    def get_input_embeddings(self):
        return self.llm.get_input_embeddings()

    def encode(self, input_features: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_features=input_features).last_hidden_state

    def audio_embeddings(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Adaptor outputs of every clip's audio frames, concatenated in batch order: (sum N_i, width).

        hidden: (B, F, d) encoder outputs, frames past each clip's `lengths` ignored (zeroed)."""
        k = self.config.adaptor_stride
        tokens = (lengths + k - 1) // k
        frames = int(tokens.max()) * k
        if hidden.shape[1] < frames:
            hidden = nn.functional.pad(hidden, (0, 0, 0, frames - hidden.shape[1]))
        hidden = hidden[:, :frames]
        hidden = hidden * (torch.arange(frames, device=hidden.device)[None, :] < lengths[:, None]).unsqueeze(-1).to(hidden.dtype)
        stacked = hidden.reshape(hidden.shape[0], frames // k, k * hidden.shape[2])
        valid = torch.arange(frames // k, device=hidden.device)[None, :] < tokens[:, None]
        return self.adaptor(stacked, valid)[valid]

    def input_embeddings(self, input_ids, audio_mask, encoder_lengths, input_features=None, encoder_hidden=None):
        """The LLM's input embeddings with the audio positions (audio_mask) filled by the adaptor."""
        if encoder_hidden is None:
            encoder_hidden = self.encode(input_features)
        audio = self.audio_embeddings(encoder_hidden, encoder_lengths)
        embeds = self.llm.get_input_embeddings()(input_ids)
        if audio.shape[0] != int(audio_mask.sum()):
            raise ValueError(f"{int(audio_mask.sum())} audio positions in the prompt, {audio.shape[0]} audio embeddings")
        return embeds.masked_scatter(audio_mask.unsqueeze(-1), audio.to(embeds.dtype))

    def forward(self, input_ids, attention_mask, audio_mask, encoder_lengths, input_features=None,
                encoder_hidden=None, labels=None, num_items_in_batch=None, **kwargs):
        embeds = self.input_embeddings(input_ids, audio_mask, encoder_lengths, input_features, encoder_hidden)
        if labels is None or not self._plain_logits():
            return self.llm(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels,
                            num_items_in_batch=num_items_in_batch, **kwargs)
        # the vocabulary projection only where a token is learned (the transcript and <|im_end|>):
        # prompt and audio positions are most of the sequence, and their logits would be thrown away
        hidden = self.llm.get_decoder()(inputs_embeds=embeds, attention_mask=attention_mask, **kwargs).last_hidden_state
        targets = labels[:, 1:]
        learned = targets != -100
        logits = self.llm.get_output_embeddings()(hidden[:, :-1][learned]).float()
        loss = nn.functional.cross_entropy(logits, targets[learned], reduction="sum")
        loss = loss / (num_items_in_batch if num_items_in_batch is not None else learned.sum().clamp(min=1))
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def _plain_logits(self) -> bool:
        """Logits are the output projection of the last hidden state, nothing more (Qwen, Llama, ...)."""
        text = self.config.text_config
        return not any(getattr(text, k, None) for k in ("final_logit_softcapping", "logit_scale", "logits_scaling"))


class SpeechLLMProcessor:
    """Whisper's feature extractor and the LLM's tokenizer, saved side by side in one directory."""

    def __init__(self, feature_extractor, tokenizer):
        self.feature_extractor, self.tokenizer = feature_extractor, tokenizer

    @classmethod
    def from_pretrained(cls, path):
        from transformers import AutoTokenizer, WhisperFeatureExtractor

        return cls(WhisperFeatureExtractor.from_pretrained(path, local_files_only=True),
                   AutoTokenizer.from_pretrained(path, local_files_only=True))

    def save_pretrained(self, path) -> None:
        self.feature_extractor.save_pretrained(path)
        self.tokenizer.save_pretrained(path)


# with asrtune imported, AutoConfig/AutoModel (and AutoTokenizer, which reads the config) know the type
AutoConfig.register(SpeechLLMConfig.model_type, SpeechLLMConfig)
AutoModel.register(SpeechLLMConfig, SpeechLLM)
