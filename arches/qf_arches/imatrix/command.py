"""``qf imatrix``: collect an importance matrix like llama-imatrix (a command this plugin adds to the ``qf`` CLI)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from qf import hookimpl
from qf.errors import UsageError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 118}


@hookimpl
def qf_register_commands(cli: click.Group) -> None:
    cli.add_command(imatrix)


@click.command("imatrix", context_settings=CONTEXT)
@click.argument("model", required=False)
@click.option("-f", "--file", "text_file", type=click.Path(dir_okay=False), help="Calibration text (UTF-8).")
@click.option("--tokens", "tokens_file", type=click.Path(dir_okay=False),
              help="Token ids instead of -f: .npy, or integers separated by whitespace or commas.")
@click.option("-o", "--output", default="imatrix.gguf", show_default=True, help="Output imatrix file.")
@click.option("--output-format", type=click.Choice(["gguf", "dat"]), default="gguf", show_default=True,
              help="llama-imatrix's GGUF format, or the legacy .dat.")
@click.option("-c", "--ctx-size", "n_ctx", type=click.IntRange(min=2), default=512, show_default=True,
              help="Tokens per chunk.")
@click.option("--chunks", "n_chunks", type=int, default=-1, show_default=True, help="Chunks to process (-1: all).")
@click.option("--chunk", "skip_chunks", type=click.IntRange(min=0), default=0, help="Skip this many chunks first.")
@click.option("-b", "--batch-size", "n_batch", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Tokens per decode (n_batch // ctx chunks together, as llama-imatrix).")
@click.option("--ubatch-size", "n_ubatch", type=click.IntRange(min=1), default=512, show_default=True,
              help="llama.cpp's ubatch size (decides the order rows are summed in).")
@click.option("--mtp", is_flag=True, help="Also run the MTP/NextN draft head (entries for blk.<n>.nextn.* and the"
              " MTP block).")
@click.option("--in-file", "in_files", multiple=True, type=click.Path(dir_okay=False),
              help="imatrix (GGUF or .dat) to merge: sums and counts add. Repeatable.")
@click.option("--process-output", is_flag=True, help="Also collect output.weight.")
@click.option("--no-ppl", is_flag=True, help="Do not compute the perplexity (skips the LM head).")
@click.option("--show-statistics", is_flag=True,
              help="Print per-tensor statistics (of the --in-file alone when there is no text to process).")
@click.option("-t", "--threads", type=click.IntRange(min=1), help="Threads for the matrix multiplies.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def imatrix(model, text_file, tokens_file, output, output_format, n_ctx, n_chunks, skip_chunks, n_batch, n_ubatch,
            mtp, in_files, process_output, no_ppl, show_statistics, threads, quiet) -> None:
    """Collect an importance matrix like llama-imatrix: qf imatrix MODEL -f TEXT -o imatrix.gguf.

    Runs MODEL's forward pass (numpy; from its architecture plugin) over chunks of the text and sums the squared
    inputs of every matrix multiply on blk.* weights (per expert for MoE).  Without -f/--tokens, merges the
    --in-file imatrices (or shows their statistics).  MODEL may be `@smollm2`.
    """
    from qf_arches.imatrix.collect import (
        CollectOptions,
        ImatrixStats,
        ModelWeights,
        collect,
        format_statistics,
        load_forward,
        load_in_files,
        write_lines,
    )
    from qf_arches.imatrix.files import save

    if text_file and tokens_file:
        raise UsageError("give -f/--file or --tokens, not both")
    has_input = bool(text_file or tokens_file)
    if not has_input and not in_files:
        raise UsageError("nothing to do: give MODEL with -f TEXT (or --tokens FILE), and/or --in-file imatrices")
    if has_input and not model:
        raise UsageError("-f/--tokens need a MODEL to run")
    stats = load_in_files(in_files, n_ctx) if in_files else ImatrixStats(n_ctx)
    if not has_input:
        merged = stats.to_imatrix()
        if show_statistics:
            write_lines(format_statistics(merged, ", ".join(in_files)))
            return
        save(merged, output, output_format)
        if not quiet:
            click.echo(f"wrote {output} ({len(merged.entries)} entries merged from {len(in_files)} file(s))", err=True)
        return

    import numpy as np

    from qf.app.aliases import find_model
    from qf.gguf_io import TensorSource
    from qf.plugins import get_registry
    from qf_arches.imatrix.tokenize import chunk_bos, load_token_file, tokenize_text

    weights = ModelWeights(TensorSource.open(find_model(model), get_registry().type_sizes()))
    forward = load_forward(weights)
    if tokens_file:
        tokens = load_token_file(tokens_file, forward.n_vocab)
    else:
        try:
            text = Path(text_file).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise UsageError(f"-f {text_file}: cannot read: {exc.strerror}") from None
        tokens = tokenize_text(weights.metadata, text)
    opts = CollectOptions(n_ctx=n_ctx, n_chunks=None if n_chunks < 0 else n_chunks, n_batch=n_batch,
                          n_ubatch=n_ubatch, mtp=mtp, process_output=process_output, compute_ppl=not no_ppl,
                          bos_id=chunk_bos(weights.metadata), skip_chunks=skip_chunks)
    bar = None

    def progress(done: int, total: int, ppl) -> None:
        nonlocal bar
        if quiet:
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="chunk", desc="imatrix", file=sys.stderr, dynamic_ncols=True)
        bar.update(done - bar.n)
        if not no_ppl:
            bar.set_postfix_str(f"ppl {ppl.value:.4f}")

    from threadpoolctl import threadpool_limits

    try:
        with threadpool_limits(limits=threads):
            result = collect(weights, np.asarray(tokens), opts, stats, progress, forward)
    finally:
        if bar is not None:
            bar.close()
    stats.datasets.append(text_file or tokens_file)
    out = stats.to_imatrix()
    save(out, output, output_format)
    if not quiet:
        for w in result.warnings:
            click.echo(f"warning: {w}", err=True)
        for note in stats.notes:
            click.echo(f"note: {note}", err=True)
        speed = result.n_tokens / result.seconds if result.seconds > 0 else float("nan")
        line = f"{result.n_chunks} chunks of {n_ctx} tokens in {result.seconds:.1f} s ({speed:.1f} tokens/s)"
        if not no_ppl:
            line += f"; PPL = {result.ppl.value:.4f} +/- {result.ppl.error:.5f}"
            if result.mtp_ppl is not None:
                line += f"; MTP head PPL = {result.mtp_ppl.value:.4f}"
        click.echo(line, err=True)
        click.echo(f"wrote {output} ({len(out.entries)} entries, {out.chunk_count} chunks)", err=True)
    if show_statistics:
        write_lines(format_statistics(out, output))
