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
@click.option("--engine", default="auto", show_default=True, metavar="auto|numpy|llama.cpp|...",
              help="Forward pass (a registered imatrix engine): qf's numpy passes, llama.cpp's (llama-cpp-python;"
              " every architecture llama.cpp runs), or auto = numpy where qf has a pass for the architecture,"
              " llama.cpp otherwise (with --mtp an engine that runs MTP heads first).")
@click.option("--parse-special", is_flag=True,
              help="Special tokens in the text (chat/tool markers) become special tokens, as llama-imatrix's"
              " --parse-special (tokenizes with llama.cpp).")
@click.option("--output-frequency", "out_freq", type=click.IntRange(min=1), default=10, show_default=True,
              help="Write the output file every N chunks (as llama-imatrix), so an interrupted run can resume.")
@click.option("--save-frequency", "save_freq", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also keep a copy OUTPUT.at_N every N chunks (0: none).")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run: merge the existing OUTPUT and skip the chunks it holds.")
@click.option("-v", "--verbose", is_flag=True, help="Show llama.cpp's own log (llama.cpp engine).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def imatrix(model, text_file, tokens_file, output, output_format, n_ctx, n_chunks, skip_chunks, n_batch, n_ubatch,
            mtp, in_files, process_output, no_ppl, show_statistics, threads, engine, parse_special, out_freq,
            save_freq, resume, verbose, quiet) -> None:
    """Collect an importance matrix like llama-imatrix: qf imatrix MODEL -f TEXT -o imatrix.gguf.

    Runs MODEL's forward pass over chunks of the text and sums the squared inputs of every matrix multiply on
    blk.* weights (per expert for MoE): qf's numpy pass where its architecture plugin has one, otherwise
    llama.cpp's (--engine).  Without -f/--tokens, merges the --in-file imatrices (or shows their statistics).
    MODEL may be `@smollm2`.
    """
    from qf_arches.imatrix.collect import (
        CollectOptions,
        ImatrixStats,
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
    if resume:
        if not has_input:
            raise UsageError("--resume continues a run over a text: give MODEL and -f/--tokens")
        if Path(output).exists():
            in_files = (*in_files, output)
    stats = load_in_files(in_files, n_ctx) if in_files else ImatrixStats(n_ctx)
    if not has_input:
        from qf_arches.imatrix.collect import format_statistics

        merged = stats.to_imatrix()
        if show_statistics:
            write_lines(format_statistics(merged, ", ".join(in_files)))
            return
        save(merged, output, output_format)
        if not quiet:
            click.echo(f"wrote {output} ({len(merged.entries)} entries merged from {len(in_files)} file(s))", err=True)
        return
    if resume and Path(output).exists() and skip_chunks == 0:
        skip_chunks = stats.chunk_count
        if not quiet:
            click.echo(f"resuming: {output} holds {skip_chunks} chunks; starting at chunk {skip_chunks + 1}", err=True)


    from qf.app.aliases import find_model
    from qf.gguf_io import TensorSource
    from qf.plugins import get_registry
    from qf_arches.imatrix.engines import choose_engine

    model_path = find_model(model)
    source = TensorSource.open(model_path, get_registry().type_sizes())
    arch = source.metadata.get("general.architecture", "")
    chosen, reason = choose_engine(engine, arch, mtp=mtp)
    engine_name = chosen.name
    text = None
    if text_file:
        try:
            text = Path(text_file).read_bytes()
        except OSError as exc:
            raise UsageError(f"-f {text_file}: cannot read: {exc.strerror}") from None
        if text.endswith(b"\n"):  # llama.cpp's -f drops one trailing newline
            text = text[:-1]
    opts = CollectOptions(n_ctx=n_ctx, n_chunks=None if n_chunks < 0 else n_chunks, n_batch=n_batch,
                          n_ubatch=n_ubatch, mtp=mtp, process_output=process_output, compute_ppl=not no_ppl,
                          skip_chunks=skip_chunks)
    dataset = text_file or tokens_file
    if not (resume and stats.datasets and stats.datasets[-1] == dataset):
        stats.datasets.append(dataset)
    bar = None
    saved_at = stats.chunk_count

    def progress(done: int, total: int, ppl) -> None:
        nonlocal bar, saved_at
        # llama-imatrix writes the output whenever its chunk count passes a multiple of --output-frequency
        # (and a copy OUTPUT.at_N for --save-frequency)
        chunk = stats.chunk_count
        if chunk > saved_at:
            if chunk // out_freq > saved_at // out_freq:
                save(stats.to_imatrix(), output, output_format)
            if save_freq and chunk // save_freq > saved_at // save_freq:
                save(stats.to_imatrix(), f"{output}.at_{chunk // save_freq * save_freq}", output_format)
            saved_at = chunk
        if quiet:
            return
        if bar is None:  # the run has started: all input checked
            from tqdm import tqdm

            click.echo(f"qf imatrix: {engine_name} engine for {arch or 'this model'} ({reason})", err=True)

            bar = tqdm(total=total, unit="chunk", desc=f"imatrix ({engine_name})", file=sys.stderr,
                       dynamic_ncols=True)
        bar.update(done - bar.n)
        if not no_ppl and ppl.count:
            bar.set_postfix_str(f"ppl {ppl.value:.4f}")

    from qf_arches.imatrix.engines import EngineRun

    run = EngineRun(model_path, source, text, tokens_file, parse_special, opts, stats, progress, threads, verbose)
    try:
        result = chosen.run(run)
    finally:
        if bar is not None:
            bar.close()
    out = stats.to_imatrix()
    save(out, output, output_format)
    if not quiet:
        for w in result.warnings:
            click.echo(f"warning: {w}", err=True)
        for note in stats.notes:
            click.echo(f"note: {note}", err=True)
        speed = result.n_tokens / result.seconds if result.seconds > 0 else float("nan")
        line = (f"{result.n_chunks} chunks of {n_ctx} tokens in {result.seconds:.1f} s ({speed:.1f} tokens/s,"
                f" {engine_name})")
        if not no_ppl:
            line += f"; PPL = {result.ppl.value:.4f} +/- {result.ppl.error:.5f}"
            if result.mtp_ppl is not None:
                line += f"; MTP head PPL = {result.mtp_ppl.value:.4f}"
        click.echo(line, err=True)
        click.echo(f"wrote {output} ({len(out.entries)} entries, {out.chunk_count} chunks)", err=True)
    if show_statistics:
        from qf_arches.imatrix.collect import format_statistics

        write_lines(format_statistics(out, output))
