"""Fuzzing what users type and write: recipes, tensor-type files, ``--tensor-type``, ``--override-kv`` and the
options of ``qf quantize``.

Any input gives a result or a :class:`UsageError` (a :class:`QfError`) — never another exception; on the command
line, exit code 0, or 1/2 with one ``qf: error: ...`` line (click's own usage errors: its ``Error: ...`` line) and
no traceback.
"""

from __future__ import annotations

import datetime
import itertools
import math
import re
import struct
from pathlib import Path

import attrs
import numpy as np
import pytest
from click.testing import CliRunner
from gguf.constants import GGUFValueType as T
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from model_factory import write_model
from qf.errors import QfError, UsageError
from qf.gguf_io import GGUFFile
from qf.gguf_io.writer import header_bytes
from qf.metadata import parse_override_kv
from qf.options import QuantizeOptions, recipe_settings, resolve
from qf.recipe import RULE_KEYS, TypeRule, load_recipe, load_tensor_type_file, parse_tensor_type

FUZZ = settings(max_examples=200, deadline=2000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SOME = settings(FUZZ, max_examples=150)

#: names users type: presets, types (both spellings), strategies, choices
WORDS = ["Q4_0", "Q4_K_M", "Q8_0", "q4_k", "F16", "IQ2_XXS", "COPY", "MXFP4", "ggml", "rtn", "exhaustive", "gradient",
         "upgrade", "allow", "error", "use", "ignore", "ik", "7", ""]
counter = itertools.count()


def one_line_usage_error(exc: QfError, short: bool = True) -> None:
    """One line; and with ``short``, of reasonable length (names and values quoted in it are cut)."""
    assert isinstance(exc, UsageError), f"{type(exc).__name__}: {exc}"
    message = str(exc)
    assert "\n" not in message and "\r" not in message, repr(message)
    assert not short or len(message) < 600, f"overlong error ({len(message)} chars): {message[:200]!r}"


def new_file(folder: Path, name: str, content: bytes) -> Path:
    path = folder / f"{next(counter)}-{name}"
    path.write_bytes(content)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-parsing")


# ------------------------------------------------------------------------------------------------------------------
# --override-kv
# ------------------------------------------------------------------------------------------------------------------

NUMBERS = st.one_of(st.integers(-(2**70), 2**70).map(str), st.floats(allow_nan=True).map(repr),
                    st.sampled_from(["1e39", "-1e39", "3.4028235e38", "3.4028234e38", "1e-50", "nan", "inf", "-0",
                                     "0x10", " 7 ", "+7", "1_000", "9" * 5000, "0" * 5000 + "1", "٣", "²", "1.5",
                                     "true", "false", "True", "1", "0", ""]))
OVERRIDES = st.one_of(
    st.text(),
    st.builds(lambda key, kind, value: f"{key}={kind}:{value}",
              st.one_of(st.sampled_from(["general.name", "a.b", "x" * 127, "x" * 128, "é" * 64, "\udcff", "k=v"]),
                        st.text(min_size=0, max_size=8)),
              st.one_of(st.sampled_from(["int", "float", "bool", "str", "INT", "u32", ""]), st.text(max_size=4)),
              st.one_of(NUMBERS, st.text(max_size=140), st.sampled_from(["\udcff\udcfe", "\ud800", "é" * 64]))),
)


@FUZZ
@given(spec=OVERRIDES)
@example(spec="foo=float:1e39")
@example(spec="foo=int:abc")
@example(spec="foo=int:4294967296")
@example(spec="foo=int:" + "9" * 5000)
@example(spec="foo=str:\udcff")
@example(spec="foo=int:-" + "0" * 5000 + "12")
@example(spec="\ud800=str:x")
def test_override_kv(folder, spec):
    try:
        kv = parse_override_kv(spec)
    except QfError as exc:
        one_line_usage_error(exc)
        return
    key, _, rest = spec.partition("=")
    kind, _, value = rest.partition(":")
    assert kv.key == key and len(key.encode("utf-8", "surrogateescape")) < 128
    if kind == "int":
        assert kv.vtype == T.UINT32 and kv.value == int(value.strip().lstrip("+-").lstrip("0") or "0")
    elif kind == "float":
        assert kv.vtype == T.FLOAT32 and math.isfinite(struct.unpack("<f", struct.pack("<f", kv.value))[0])
    elif kind == "bool":
        assert kv.vtype == T.BOOL and kv.value == (value == "true")
    else:
        assert kind == "str" and kv.vtype == T.STRING and len(value.encode("utf-8", "surrogateescape")) <= 127
    # what is written reads back the same
    back = GGUFFile.open(new_file(folder, "kv.gguf", header_bytes([kv], []))).kvs[0]
    assert back.raw == kv.raw and back.key == kv.key
    assert back.value == kv.value or (kind == "float" and back.value == struct.unpack("<f", struct.pack("<f",
                                                                                                       kv.value))[0])


@pytest.mark.parametrize("spec,needle", [
    ("foo=float:1e39", "not a finite 32-bit float"), ("foo=float:nan", "not a finite"),
    ("foo=int:abc", "not an integer of at most 32 bits"), ("foo=int:4294967296", "at most 32 bits"),
    ("foo=int:-4294967296", "at most 32 bits"), ("foo=int:" + "9" * 5000, "at most 32 bits"),
    ("foo=int:٣", "at most 32 bits"), ("foo=bool:yes", "invalid boolean"), ("foo=str:" + "é" * 64, "127 bytes"),
    ("\ud800=int:1", "not UTF-8"), ("foo=str:\ud800", "not UTF-8"), ("x" * 128 + "=int:1", "longer than 127 bytes"),
    ("é" * 64 + "=int:1", "longer than 127 bytes"), ("foo", "expected KEY=TYPE:VALUE"), ("=int:1", "expected KEY"),
    ("foo=int", "invalid type"), ("foo=u32:1", "invalid type 'u32'"),
])
def test_override_kv_errors(spec, needle):
    with pytest.raises(UsageError, match=re.escape(needle)) as info:
        parse_override_kv(spec)
    one_line_usage_error(info.value)


def test_override_kv_values():
    assert parse_override_kv("a=int:-5").value == 5  # llama-quantize writes |value| as u32
    assert parse_override_kv("a=int: 00042 ").value == 42
    assert parse_override_kv("a=int:" + "0" * 6000 + "7").value == 7
    assert parse_override_kv("a=str:\udcff").raw.endswith(b"\x01\x00\x00\x00\x00\x00\x00\x00\xff")  # argv bytes


# ------------------------------------------------------------------------------------------------------------------
# --tensor-type and --tensor-type-file
# ------------------------------------------------------------------------------------------------------------------

REGEXES = st.one_of(st.text(max_size=12), st.sampled_from([
    r"blk\.\d+\.attn_q", "(", "a{2,1}", "x{99999999999}", "(" * 5000 + ")" * 5000, "[z-a]", r"\Z", r"\N{BOGUS}",
    "(?i)a(?i)", "(?P<a>)(?P<a>)", "*", "a**", r"\\", "\\", "é", "\x00", "ffn_(up|down)", "."]),
    st.from_regex(r"[a-z_.\\()|*+?\[\]{}0-9^$-]{0,16}", fullmatch=True))
SPECS = st.one_of(st.text(), st.builds(lambda p, t: f"{p}={t}", REGEXES, st.one_of(st.sampled_from(WORDS),
                                                                                    st.text(max_size=6))))
NAMES = ["blk.0.attn_q.weight", "blk.12.ffn_down_exps.weight", "token_embd.weight", "output.weight", "é"]


def check_rule(rule: TypeRule) -> None:
    assert isinstance(rule, TypeRule) and isinstance(rule.regex, re.Pattern)
    for name in NAMES:
        rule.matches(name)


@FUZZ
@given(spec=SPECS)
def test_tensor_type_spec(spec):
    try:
        rule = parse_tensor_type(spec)
    except QfError as exc:
        one_line_usage_error(exc)
        return
    pattern, _, type_name = spec.partition("=")
    assert rule.pattern == pattern.lower() and rule.type_name == type_name
    check_rule(rule)


TYPE_FILES = st.one_of(
    st.binary(max_size=64),
    st.lists(SPECS, max_size=6).map(lambda xs: " \n".join(xs).encode("utf-8", "surrogateescape")),
    st.sampled_from([b"\xff\xfe", "attn_q=Q8_0\n".encode("utf-16"), b"a=b\x00c=d"]),
)


@SOME
@given(content=TYPE_FILES)
def test_tensor_type_file(folder, content):
    path = new_file(folder, "types.txt", content)
    try:
        rules = load_tensor_type_file(path)
    except QfError as exc:
        one_line_usage_error(exc)
        assert path.name in str(exc)
        return
    for rule in rules:
        check_rule(rule)
    assert len(rules) == len(content.decode("utf-8").split())


def test_large_files_are_not_read_whole(folder):
    path = folder / "big.gguf"
    with open(path, "wb") as fh:
        fh.truncate(64 << 20)  # sparse: a model given as a recipe by mistake
    for load in (load_recipe, load_tensor_type_file):
        with pytest.raises(UsageError, match="larger than 16 MiB") as info:
            load(path)
        one_line_usage_error(info.value)


def test_tensor_type_file_not_utf8(folder):
    with pytest.raises(UsageError, match="not UTF-8 text") as info:
        load_tensor_type_file(new_file(folder, "t.txt", "a=Q8_0".encode("utf-16")))
    one_line_usage_error(info.value)


# ------------------------------------------------------------------------------------------------------------------
# recipes
# ------------------------------------------------------------------------------------------------------------------

def toml_string(s: str) -> str:
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{toml_string(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


SCALAR_VALUES = st.one_of(
    st.sampled_from(WORDS), st.text(max_size=10), REGEXES, st.integers(), st.integers(-(2**64), 2**64),
    st.floats(), st.booleans(), st.dates(), st.times(), st.datetimes(),
)
TOML_VALUES = st.recursive(SCALAR_VALUES, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)), max_leaves=6)
SETTING_KEYS = st.one_of(st.sampled_from([*recipe_settings(), "rule", "extend"]), st.text(max_size=6))
RULE_KEY = st.one_of(st.sampled_from([*RULE_KEYS, "typ"]), st.text(max_size=4))


@st.composite
def recipes(draw) -> bytes:
    lines = []
    if draw(st.booleans()):
        lines.append(f"extends = {toml_string(draw(st.sampled_from(WORDS)))}")
    for key, value in draw(st.dictionaries(SETTING_KEYS, TOML_VALUES, max_size=4)).items():
        lines.append(f"{toml_string(key)} = {toml_value(value)}")
    for _ in range(draw(st.integers(0, 3))):
        lines.append("[[rule]]")
        rule = {"match": draw(REGEXES), "type": draw(st.sampled_from(WORDS))}
        rule.update(draw(st.dictionaries(RULE_KEY, st.one_of(st.sampled_from(WORDS), TOML_VALUES), max_size=3)))
        lines += [f"{toml_string(k)} = {toml_value(v)}" for k, v in rule.items()]
    text = "\n".join(lines) + "\n"
    if draw(st.integers(0, 4)) == 0:  # and a typo somewhere
        pos = draw(st.integers(0, len(text)))
        text = text[:pos] + draw(st.text(min_size=1, max_size=3)) + text[pos:]
    return text.encode()


RECIPES = st.one_of(recipes(), st.binary(max_size=80), st.text(max_size=80).map(str.encode),
                    st.sampled_from([b"a = " + b"[" * 5000 + b"]" * 5000, b"a = {b=" * 3000 + b"1" + b"}" * 3000,
                                     b"extends = 1" + b"0" * 5000, b"match = 7", b"rule = 5", b"strategy = 3",
                                     b"[[rule]]\nmatch = 7\ntype = 'Q8_0'", b"[rule]\nmatch='a'", b"\xff\xfe",
                                     "extends = 'Q4_0'".encode("utf-16"), b"extends = 'Q4_0'\x00"]))


def check_resolved(options: QuantizeOptions) -> None:
    assert isinstance(options.ftype, str)
    assert all(isinstance(rule, TypeRule) for rule in options.rules)
    for rule in options.rules:
        check_rule(rule)
    for f in attrs.fields(QuantizeOptions):
        spec = f.metadata["qf"]
        value = getattr(options, f.name)
        if spec.recipe is not None and spec.kind is str and value is not None and f.name != "rules":
            assert isinstance(value, str), (f.name, value)


@FUZZ
@given(content=RECIPES, tensor_types=st.lists(SPECS, max_size=2))
def test_recipe(folder, content, tensor_types):
    path = new_file(folder, "r.toml", content)
    try:
        recipe = load_recipe(path)
    except QfError as exc:
        one_line_usage_error(exc)
        return
    assert all(isinstance(rule, TypeRule) for rule in recipe.rules)
    try:
        options = resolve(QuantizeOptions.from_kwargs(recipe=str(path), tensor_types=tensor_types))
    except QfError as exc:
        # qf.options quotes a recipe value of the wrong type whole (`pure = "<10 kB>"`): one line, but long
        one_line_usage_error(exc, short=False)
        return
    check_resolved(options)


@pytest.mark.parametrize("content,needle", [
    (b'extends = "Q4_0"\n[[rule]]\nmatch = 7\ntype = "Q8_0"\n', "match must be a string, not int 7"),
    (b'extends = "Q4_0"\nrule = 5\n', "'rule' must be [[rule]] tables"),
    (b'extends = "Q4_0"\nstrategy = 3\n', "strategy: expected str, got int 3"),
    (b'extends = "Q4_0"\n[[rule]]\nmatch = "a"\ntype = "Q8_0"\nstrategy = 3\n', "strategy must be a string"),
    (b'extends = "Q4_0"\n[[rule]]\nmatch = "a"\ntype = ["Q8_0"]\n', "type must be a string, not list"),
    (b"extends = 'Q4_0'\n\xff\n", "not UTF-8 text (byte 17)"),
    ("extends = 'Q4_0'".encode("utf-16"), "not UTF-8 text"),
    (b"a = " + b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    (b"a = 1" + b"0" * 5000, "TOML error"),
    (b"extends = 0b1" + b"0" * 20000, "an integer of 20001 bits (TOML integers are 64-bit)"),
    (b"extends = 9223372036854775808", "an integer of 64 bits"),
    (b'[[rule]]\nmatch = "a"\ntype = [0x1' + b"0" * 5000 + b"]\n", "TOML integers are 64-bit"),
    (b'extends = "Q4_0"\n[[rule]]\nmatch = "' + b"(" * 5000 + b")" * 5000 + b'"\ntype = "Q8_0"\n', "invalid regex"),
    (b'extends = "Q4_0"\n[[rule]]\nmatch = "x{99999999999}"\ntype = "Q8_0"\n', "invalid regex"),
    (b'extends = "Q4_0"\n[[rule]]\nmatch = "a"\ntype = "Q8_0"\nimatrix = "maybe"\n', "imatrix must be"),
    (b'extends = "Q4_0"\n[[rule]]\nmatch = "a"\ntype = "Q8_0"\n"' + b"k" * 5000 + b'" = 1\n', "unknown key(s)"),
    (b'extends = "Q4_0"\n[[rule]]\nmatch = "a"\ntype = "Q8_0"\n"\\rU" = 1\n', "unknown key(s) '\\rU'"),
])
def test_recipe_errors(folder, content, needle):
    path = new_file(folder, "r.toml", content)
    with pytest.raises(UsageError) as info:
        resolve(QuantizeOptions.from_kwargs(recipe=str(path)))
    one_line_usage_error(info.value)
    assert needle in str(info.value)


# ------------------------------------------------------------------------------------------------------------------
# qf quantize's options (in-process, through click; --dry-run, so nothing is quantized)
# ------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    from imatrix_files import write_dat

    folder = tmp_path_factory.mktemp("cli")
    shapes = {"token_embd.weight": (64, 32), "output_norm.weight": (64,), "blk.0.attn_norm.weight": (64,),
              "blk.0.attn_q.weight": (64, 64), "blk.0.ffn_down.weight": (96, 64), "output.weight": (64, 32)}
    model = write_model(folder / "m.gguf", shapes=shapes)
    imatrix = write_dat(folder / "im.dat", {"blk.0.attn_q.weight": np.ones(64), "blk.0.ffn_down.weight": np.ones(96)})
    recipe = folder / "r.toml"
    recipe.write_text('extends = "Q4_0"\n[[rule]]\nmatch = "attn"\ntype = "Q8_0"\n')
    types = folder / "types.txt"
    types.write_text("ffn_down=Q8_0\n")
    junk = folder / "junk.bin"
    junk.write_bytes(b"\xff" * 100)
    (folder / "adir").mkdir()
    return {"model": str(model), "imatrix": str(imatrix), "recipe": str(recipe), "types": str(types),
            "junk": str(junk), "dir": str(folder / "adir"), "missing": str(folder / "missing.gguf"),
            "out": str(folder / "out.gguf")}


FLAG_VALUES = {
    "--strategy": st.sampled_from(["ggml", "rtn", "exhaustive", "gradient", "bogus", ""]),
    "--target": st.sampled_from(["ggml", "ik", "bogus"]),
    "--output-tensor-type": st.sampled_from(WORDS),
    "--token-embedding-type": st.sampled_from(WORDS),
    "--tensor-type": SPECS,
    "--include-weights": st.text(max_size=6),
    "--exclude-weights": st.text(max_size=6),
    "--override-kv": OVERRIDES,
    # non-ASCII digits are left out: qf.options.parse_layers fails on them (see test_known_bugs below)
    "--prune-layers": st.one_of(st.from_regex(r"[0-9,]{0,8}", fullmatch=True), st.sampled_from(["a", "-1", "1,,2"])),
    "--on-missing-imatrix": st.sampled_from(["error", "upgrade", "allow", "bogus"]),
    "--threads": st.sampled_from(["1", "2", "0", "-1", "x", "99999999999999999999"]),
}
FILE_FLAGS = ["--imatrix", "--tensor-type-file", "--recipe"]
BOOL_FLAGS = ["--allow-requantize", "--leave-output-tensor", "--pure", "--keep-split", "--mtp-types", "--no-fallback",
              "--json", "-q"]


@st.composite
def command_lines(draw) -> list[str]:
    args = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["value", "value", "file", "bool", "junk"]))
        if kind == "value":
            flag = draw(st.sampled_from(sorted(FLAG_VALUES)))
            args += [flag, draw(FLAG_VALUES[flag])]
        elif kind == "file":
            args += [draw(st.sampled_from(FILE_FLAGS)),
                     draw(st.sampled_from(["imatrix", "recipe", "types", "junk", "dir", "missing", "model"]))]
        elif kind == "bool":
            args.append(draw(st.sampled_from(BOOL_FLAGS)))
        else:
            args.append(draw(st.one_of(st.sampled_from(["--bogus", "-x", "--", "-"]), st.text(max_size=6))))
    # positionals: INPUT [OUTPUT] FTYPE [NTHREADS]; ASCII digits only (see test_known_bugs)
    positionals = ["model"]
    if draw(st.booleans()):
        positionals.append("out")
    positionals.append(draw(st.sampled_from(["Q4_0", "Q8_0", "Q4_K_M", "F16", "COPY", "7", "2", "bogus", "IQ2_XXS"])))
    if draw(st.integers(0, 3)) == 0:
        positionals.append(draw(st.sampled_from(["1", "2", "0", "x", "99999"])))
    return args + positionals


def run_cli(args: list[str]):
    from qf.app.cli import cli

    return CliRunner().invoke(cli, ["quantize", "--dry-run", *args], catch_exceptions=True)


def check_cli(result) -> None:
    """Success, or a QfError's exit code with one ``qf: error:`` line (click's usage errors: exit 2, ``Error:``)."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # with its traceback
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        return
    stderr = result.stderr.strip().splitlines()
    assert stderr, result.output
    if stderr[0].startswith("qf: error: "):
        assert result.exit_code in (1, 2, 3) and len(stderr) == 1, result.stderr
    else:  # click's usage message: "Usage: ...", "Try ...", "", "Error: ..."
        assert result.exit_code == 2 and stderr[-1].startswith("Error: "), result.stderr


@SOME
@given(args=command_lines())
def test_quantize_options(cli_files, args):
    args = [cli_files.get(a, a) for a in args]
    check_cli(run_cli(args))


@pytest.mark.parametrize("args", [
    ["--override-kv", "foo=float:1e39"], ["--override-kv", "foo=int:abc"], ["--override-kv", "foo=int:99999999999"],
    ["--override-kv", "foo=str:\ud800"], ["--tensor-type", "(=Q8_0"], ["--tensor-type-file", "junk"],
    ["--recipe", "junk"], ["--imatrix", "junk"], ["--imatrix", "dir"], ["--imatrix", "model"],
    ["--tensor-type-file", "dir"], ["--recipe", "missing"], ["--prune-layers", "a"], ["-t", "0"],
])
def test_quantize_option_errors(cli_files, args):
    args = [cli_files.get(a, a) for a in args]
    result = run_cli([*args, cli_files["model"], "Q4_0"])
    check_cli(result)
    assert result.exit_code in (1, 2)


@pytest.mark.parametrize("args,needle", [
    ([b"--override-kv", b"f\xff=int:1", b"--override-kv", b"foo=int:" + b"9" * 5000], "at most 32 bits"),
    ([b"--tensor-type-file", b"RECIPE"], "not UTF-8 text"),
])
def test_quantize_in_a_process(cli_files, tmp_path, args, needle):
    """The real command (argv bytes that are not UTF-8 included): exit code 2, one line, no traceback."""
    import subprocess
    import sys

    recipe = tmp_path / "bad.toml"
    recipe.write_bytes(b"extends = 'Q4_0'\n# caf\xe9\n")
    args = [str(recipe).encode() if a == b"RECIPE" else a for a in args]
    proc = subprocess.run([sys.executable.encode(), b"-m", b"qf", b"quantize", b"--dry-run", *args,
                           cli_files["model"].encode(), b"Q4_0"], capture_output=True)
    stderr = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    assert proc.returncode == 2 and len(stderr) == 1 and stderr[0].startswith("qf: error: "), proc.stderr
    assert needle in stderr[0]


@pytest.mark.parametrize("args", [["--prune-layers", "²"], ["model", "Q4_0", "²"], ["model", "²"]])
def test_non_ascii_digits_are_not_numbers(cli_files, args):
    """'²' is a digit to str.isdigit but not to int(): layer ids, ftype ids and thread counts take ASCII digits."""
    args = [cli_files.get(a, a) for a in args]
    if args[0] == "--prune-layers":
        args += [cli_files["model"], "Q4_0"]
    check_cli(run_cli(args))
