"""decode's max-new-tokens guard: which utterances stopped at it, counted from the generated tokens, carried
by decode (data/decode/<m>/<c>.capped.txt), normalize (`capped`) and score (degeneration.<c>.<m>.capped)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch

from conftest import in_process, params_for, write_audio

LONG = 3 * 16000  # the stub's model loops on clips of 2 s and more


class FakeNet:
    """generate() as transformers returns it: a decoder-only model returns its prompt and the new tokens, a row
    that ended padded after its end token; Whisper (encoder-decoder) returns the new tokens only, without the
    end token of the longest row."""

    def __init__(self, encoder_decoder: bool):
        self.config = SimpleNamespace(is_encoder_decoder=encoder_decoder)
        self.generation_config = SimpleNamespace(eos_token_id=50257 if encoder_decoder else [2], pad_token_id=50257 if encoder_decoder else 0,
                                                 max_new_tokens=None)

    def generate(self, input_ids=None, generation_config=None, max_new_tokens=None, lengths=()):
        cap = max_new_tokens or generation_config.max_new_tokens
        end, pad = (50257, 50257) if self.config.is_encoder_decoder else (2, 0)
        rows = [[7] * cap if n >= 2 * 16000 else [7, 8, end] + [pad] * (cap - 3) for n in lengths]
        if self.config.is_encoder_decoder and all(n < 2 * 16000 for n in lengths):
            rows = [r[:2] for r in rows]  # every row ended: Whisper drops the end token, leaving fewer than cap
        new = torch.tensor(rows)
        return new if input_ids is None else torch.cat([input_ids, new], dim=1)


def test_the_guard_counts_generated_tokens_for_either_kind_of_model():
    from asrtune.stages.decode import Guard

    for encoder_decoder in (True, False):
        net, guard = FakeNet(encoder_decoder), Guard()
        guard.watch_transformers(net)
        prompt = None if encoder_decoder else torch.ones(3, 5, dtype=torch.long)
        config = None if encoder_decoder else SimpleNamespace(eos_token_id=2, pad_token_id=0, max_new_tokens=6)
        net.generate(input_ids=prompt, generation_config=config, max_new_tokens=6 if encoder_decoder else None,
                     lengths=[LONG, 16000, LONG])
        assert guard.rows == [True, False, True], encoder_decoder
        net.generate(input_ids=None if encoder_decoder else prompt[:1], generation_config=config,
                     max_new_tokens=6 if encoder_decoder else None, lengths=[16000])
        assert guard.rows == [True, False, True, False]  # calls within a batch add up (Whisper: one per context list)
        guard.rows = []  # as decode_all does before each batch
        net.generate(input_ids=None if encoder_decoder else prompt[:1], generation_config=config,
                     max_new_tokens=6 if encoder_decoder else None, lengths=[16000])
        assert guard.rows == [False]


def _split(repo: Path, n: int = 10) -> None:
    test = repo / "data/split/medical/test.jsonl"
    test.parent.mkdir(parents=True)
    rows = []
    for i in range(n):
        write_audio(repo / f"audio/{i}.wav", seconds=3.0 if i < 3 else 1.0)
        rows.append({"key": f"medical-{i}", "messages": [{"role": "system", "content": ""},
                     {"role": "user", "content": f"<|startofspeech|>!audio/{i}.wav<|endofspeech|>"},
                     {"role": "assistant", "content": "复查CT"}]})
    test.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def test_capped_utterances_flow_from_decode_to_score(tmp_path, monkeypatch):
    """A stub model whose base loops on the 3 long clips (好的 until the cap); merged never does. decode lists
    the capped keys beside its tsv (which stays key<TAB>text), normalize marks them, score counts them."""
    from asrtune.stages import decode, normalize, score

    repo = tmp_path
    _split(repo)
    for m in ("base", "merged"):
        (repo / "models" / m).mkdir(parents=True)
    params_for(repo, repo / "no-model-needed", **{"data.corpora": {"medical": {"role": "domain", "source": "demo/medical.yaml"}},
                                                  "decode.batch_size": 4, "decode.timestamps": False})

    def transcriber(p, model_dir, ct2_dir, reuse=False):
        net, guard, loops = FakeNet(False), decode.Guard(), model_dir.name == "base"
        guard.watch_transformers(net)

        def transcribe(batch, audio):
            lengths = [len(a) if loops else 0 for a in audio]
            net.generate(input_ids=torch.ones(len(audio), 4, dtype=torch.long), lengths=lengths,
                         generation_config=SimpleNamespace(eos_token_id=2, pad_token_id=0, max_new_tokens=20))
            return ["好的" * 20 if n >= 2 * 16000 else "复查CT" for n in lengths]

        transcribe.guard = guard
        return transcribe, "stub"

    monkeypatch.setattr(decode, "transcriber", transcriber)
    assert "3 stopped at the max-new-tokens guard" in in_process(repo, decode, "base", "medical")
    in_process(repo, decode, "merged", "medical")
    assert (repo / "data/decode/base/medical.capped.txt").read_text().split() == ["medical-0", "medical-1", "medical-2"]
    assert (repo / "data/decode/merged/medical.capped.txt").read_text() == ""
    assert all(line.count("\t") == 1 for line in (repo / "data/decode/base/medical.tsv").read_text(encoding="utf-8").splitlines())
    for m in ("base", "merged"):
        in_process(repo, normalize, m, "medical")
    rows = [json.loads(x) for x in (repo / "data/normalized/base/medical.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["capped"] for r in rows] == [True] * 3 + [False] * 7
    printed = in_process(repo, score)
    d = json.loads((repo / "metrics/cer.json").read_text(encoding="utf-8"))["degeneration"]["medical"]
    assert (d["base"]["capped"], d["base"]["looping"], d["merged"]["capped"], d["merged"]["looping"]) == (0.3, 0.3, 0.0, 0.0)
    assert d["base"]["capped_ci95"]["lo"] <= 0.3 <= d["base"]["capped_ci95"]["hi"] and d["merged"]["capped_ci95"] == {"lo": 0.0, "hi": 0.0}
    assert d["base"]["length_ratio"] == round((7 * 3 + 3 * 40) / 30, 4)  # 复查ct is 3 tokens, 好的 x 20 is 40
    assert "degeneration" in printed
