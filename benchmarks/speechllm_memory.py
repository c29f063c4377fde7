"""What the speechllm family (Whisper encoder + adaptor + causal LM) costs in parameters and memory.

1. Parameter counts per part for real-size configurations, built on the meta device (no weights
   are needed to count them): Whisper base/small/large-v3 encoders, the default adaptor, Qwen3
   0.6B/1.7B/4B.
2. One real-size training step and one decode, each in a fresh child process (so the peak is its
   own): the whisper-base encoder (offline weights when the demo extra is installed, else random)
   + the default adaptor + the Qwen3-0.6B architecture with random weights (memory does not depend
   on the values), a batch of clips, frozen encoder, adaptor trained fully, LoRA r=16 on the LLM,
   AdamW. Peak RSS (VmHWM) on CPU; on CUDA also torch's peak allocated memory, in bf16 autocast.

    uv run python benchmarks/speechllm_memory.py            # real size (about 2 minutes on 2 CPU cores)
    uv run python benchmarks/speechllm_memory.py --quick    # tiny configs, seconds (the test suite runs it)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
import warnings

warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # peft asks transformers 5 the old way

WHISPER = {  # d_model, layers, heads, ffn, mel bins
    "whisper-base": (512, 6, 8, 2048, 80),
    "whisper-small": (768, 12, 12, 3072, 80),
    "whisper-large-v3": (1280, 32, 20, 5120, 128),
}
QWEN3 = {  # hidden, intermediate, layers, heads, kv heads
    "Qwen3-0.6B": (1024, 3072, 28, 16, 8),
    "Qwen3-1.7B": (2048, 6144, 28, 16, 8),
    "Qwen3-4B": (2560, 9728, 36, 32, 8),
}
TINY_WHISPER, TINY_QWEN3 = (16, 1, 2, 32, 80), (32, 64, 2, 4, 2)


def config(whisper: tuple, qwen: tuple, vocab: int = 151936, tiny: bool = False):
    from transformers import Qwen3Config, WhisperConfig

    from asrtune.families.speechllm.model import SpeechLLMConfig
    from asrtune.params import Adaptor

    d, layers, heads, ffn, mels = whisper
    encoder = WhisperConfig(d_model=d, encoder_layers=layers, encoder_attention_heads=heads, encoder_ffn_dim=ffn,
                            decoder_layers=1, decoder_attention_heads=heads, decoder_ffn_dim=ffn, num_mel_bins=mels)
    hidden, inter, n_layers, n_heads, kv = qwen
    text = Qwen3Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=n_layers,
                       num_attention_heads=n_heads, num_key_value_heads=kv, head_dim=8 if tiny else 128,
                       tie_word_embeddings=True, max_position_embeddings=4096)
    a = Adaptor(hidden=64, layers=1, heads=2, ffn=32) if tiny else Adaptor()
    return SpeechLLMConfig(encoder_config=encoder, text_config=text, adaptor_stride=a.stride, adaptor_hidden=a.hidden,
                           adaptor_layers=a.layers, adaptor_heads=a.heads, adaptor_ffn=a.ffn)


def parameter_counts(quick: bool) -> None:
    import torch

    from asrtune.families.speechllm.model import SpeechLLM

    pairs = [("tiny", TINY_WHISPER, "tiny", TINY_QWEN3)] if quick else [
        (w, WHISPER[w], q, QWEN3[q]) for w, q in (("whisper-base", "Qwen3-0.6B"), ("whisper-small", "Qwen3-0.6B"),
                                                  ("whisper-large-v3", "Qwen3-0.6B"), ("whisper-small", "Qwen3-1.7B"),
                                                  ("whisper-large-v3", "Qwen3-4B"))]
    print("| encoder | LLM | encoder | adaptor | LLM | total | float32 weights | bf16 weights |")
    print("|---|---|---|---|---|---|---|---|")
    for w, wcfg, q, qcfg in pairs:
        with torch.device("meta"):
            model = SpeechLLM(config(wcfg, qcfg, vocab=700 if quick else 151936, tiny=quick))
        n = {part: sum(p.numel() for p in getattr(model, part).parameters()) for part in ("encoder", "adaptor", "llm")}
        total = sum(n.values())
        m = {k: f"{v / 1e6:.{3 if quick else 1}f} M" for k, v in {**n, "total": total}.items()}
        print(f"| {w} | {q} | {m['encoder']} | {m['adaptor']} | {m['llm']} | {m['total']} | "
              f"{total * 4 / 2**30:.2f} GiB | {total * 2 / 2**30:.2f} GiB |")


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def _measure(kind: str, quick: bool, batch: int, seconds: float, text_tokens: int, queue) -> None:
    import numpy as np
    import torch
    from peft import get_peft_model

    from asrtune.families import speechllm
    from asrtune.families.speechllm.model import SpeechLLM, audio_tokens, encoder_frames

    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    rss_imports = _peak_rss_mib()
    model = SpeechLLM(config(TINY_WHISPER if quick else WHISPER["whisper-base"], TINY_QWEN3 if quick else QWEN3["Qwen3-0.6B"],
                             vocab=700 if quick else 151936, tiny=quick))
    if not quick:
        try:  # the real whisper-base encoder when the demo wheels are there
            from asrtune.whisper_ct2 import convert, offline_whisper_base_dir
            import tempfile
            from transformers import WhisperForConditionalGeneration

            with tempfile.TemporaryDirectory() as tmp:
                convert(offline_whisper_base_dir(), tmp)
                model.encoder.load_state_dict(WhisperForConditionalGeneration.from_pretrained(tmp).model.encoder.state_dict())
        except Exception:  # noqa: BLE001 - random encoder weights cost the same memory
            pass
    model.to(device)
    samples = int(seconds * 16000)
    n_audio, prompt_len = audio_tokens(samples, model.config.adaptor_stride), 30
    from transformers import WhisperFeatureExtractor

    features = WhisperFeatureExtractor(feature_size=model.config.encoder_config.num_mel_bins)(
        [np.random.default_rng(i).standard_normal(samples).astype(np.float32) * 0.1 for i in range(batch)],
        sampling_rate=16000, return_tensors="pt").input_features.to(device)
    vocab = model.config.text_config.vocab_size
    lengths = torch.full((batch,), encoder_frames(samples), device=device)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=cuda)
    rss_model = _peak_rss_mib()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    if kind == "train":
        speechllm.freeze(model, True, False, False)
        model = get_peft_model(model, speechllm.lora_config(16, 32, 0.05, None, train_encoder=False, train_adaptor=True))
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        length = prompt_len + n_audio + text_tokens
        ids = torch.randint(0, vocab, (batch, length), device=device)
        audio_mask = torch.zeros(batch, length, dtype=torch.bool, device=device)
        audio_mask[:, prompt_len : prompt_len + n_audio] = True
        labels = torch.full_like(ids, -100)
        labels[:, -text_tokens:] = ids[:, -text_tokens:]
        steps = 2
        for _ in range(steps):
            with autocast:
                loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), audio_mask=audio_mask,
                             encoder_lengths=lengths, input_features=features, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        what = f"train step (batch {batch} x {seconds:g} s, {length} positions)"
    else:
        model.eval()
        ids = torch.randint(0, vocab, (batch, prompt_len + n_audio + 5), device=device)
        audio_mask = torch.zeros_like(ids, dtype=torch.bool)
        audio_mask[:, prompt_len : prompt_len + n_audio] = True
        steps = 1
        with torch.no_grad(), autocast:
            embeds = model.input_embeddings(ids, audio_mask, lengths, input_features=features)
            model.llm.generate(inputs_embeds=embeds, attention_mask=torch.ones_like(ids), do_sample=False,
                               min_new_tokens=text_tokens, max_new_tokens=text_tokens, pad_token_id=0)
        what = f"decode (batch {batch} x {seconds:g} s, {text_tokens} new tokens)"
    wall = (time.perf_counter() - start) / steps
    gpu = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    queue.put((what, device, rss_imports, rss_model, _peak_rss_mib(), gpu, wall))


def measure(kind: str, quick: bool, batch: int, seconds: float, text_tokens: int) -> None:
    """In a fresh child process, so the peak is this measurement's own (--quick: in this one, it is a smoke test)."""
    if quick:
        queue = __import__("queue").Queue()
        _measure(kind, quick, batch, seconds, text_tokens, queue)
    else:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        child = ctx.Process(target=_measure, args=(kind, quick, batch, seconds, text_tokens, queue))
        child.start()
    what, device, rss_imports, rss_model, peak, gpu, wall = queue.get()
    if not quick:
        child.join()
    gpu_text = f", CUDA peak allocated {gpu:.2f} GiB" if gpu is not None else ""
    print(f"- {what} on {device}: peak RSS {peak / 1024:.2f} GiB (after imports {rss_imports:.0f} MiB, "
          f"with the model {rss_model / 1024:.2f} GiB){gpu_text}; {wall:.1f} s per {kind} step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny configs only: seconds, for the test suite")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0, help="clip length")
    args = parser.parse_args()
    print("Parameters (meta device):\n")
    parameter_counts(args.quick)
    print("\nMeasured, " + ("tiny model" if args.quick else "whisper-base encoder + adaptor + Qwen3-0.6B (random LLM weights)") + ":\n")
    batch, seconds = (2, 1.0) if args.quick else (args.batch, args.seconds)
    measure("train", args.quick, batch, seconds, text_tokens=20)
    measure("decode", args.quick, batch, seconds, text_tokens=20)


if __name__ == "__main__":
    main()
