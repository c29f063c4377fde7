"""The `asrtune` command: one subcommand per pipeline stage (dvc.yaml runs them), plus `cache`, `transcribe` and `cut`."""

from __future__ import annotations

import sys

import typer

from asrtune.errors import UserError
from asrtune.train import cache
from asrtune.transcription import cut, transcribe
from asrtune.stages import (base, convert, decode, export, finetune, ingest, jsonl, longform, merge, mix, normalize, pseudo, score,
                            split, sweep)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Reproducible domain adaptation of speech recognition models. Stages run from dvc.yaml.")
app.command("base")(base.run)
app.command("ingest")(ingest.run)
app.command("pseudo")(pseudo.run)
app.command("jsonl")(jsonl.run)
app.command("split")(split.run)
app.command("mix")(mix.run)
app.command("finetune")(finetune.run)
app.command("sweep")(sweep.run)
app.command("merge")(merge.run)
app.command("export")(export.run)
app.command("convert")(convert.run)
app.command("decode")(decode.run)
app.command("normalize")(normalize.run)
app.command("score")(score.run)
app.command("longform")(longform.run)
app.command("cache")(cache.run)  # not a stage: lists (and clears) the cache folder
app.command("transcribe")(transcribe.run)  # not a stage: long recordings to text, subtitles or JSON
app.command("cut")(cut.run)  # not a stage: long recordings with plain transcripts to utterances


def main() -> None:
    try:
        app()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
