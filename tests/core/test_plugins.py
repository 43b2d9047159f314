"""The plugin core: entry-point loading, registrars, duplicate and failure handling, hook validation."""

from __future__ import annotations

import inspect
import types
from importlib import metadata

import pytest

import qf
import qf.execute
import qf.testing
from qf import hookimpl, hookspecs
from qf.errors import PluginError, UnknownNameError, UsageError
from qf.plugins import build_registry, get_registry, registered
from qf.values import ProblemKind, QuantType, Strategy, Target


def plugin_module(name: str, **hooks) -> types.ModuleType:
    mod = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(mod, hook_name, hookimpl(fn))
    return mod


def test_builtins_come_from_entry_points():
    eps = {ep.name: ep.value for ep in metadata.entry_points(group="qf")}
    reg = get_registry()
    for qtype in reg.quant_types.values():
        assert qtype.plugin in eps, f"{qtype.name} registered by {qtype.plugin!r}, which is not an entry point"
    assert {"ggml", "rtn"} <= set(reg.strategies)
    assert reg.strategies["ggml"].plugin in eps
    names = {p.name for p in reg.plugins}
    assert set(eps) <= names


def test_every_hook_is_documented_and_has_a_test():
    """Like datasette: every hookspec has a docstring and is exercised by a test in this file."""
    source = inspect.getsource(__import__(__name__))
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if name.startswith("qf_"):
            assert fn.__doc__, name
            assert f"{name}=" in source, f"no test uses hook {name}"


def test_registration_is_attributed_and_lookup_is_case_insensitive():
    toy = QuantType("TOYX", 201, 32, 20, "qf_plugins.quants.legacy:Q4_1_CODEC", ("asymmetric",))
    mod = plugin_module("toyx", qf_register_quant_types=lambda registrar: registrar.add_quant_type(toy))
    with registered(("toyx", mod)) as reg:
        assert reg.quant_type("toyx").plugin == "toyx"
        assert qf.quantize_rows("TOYX", qf.testing.sample_rows(64)).shape == (8, 40)
    assert "TOYX" not in get_registry().quant_types


def test_duplicate_name_names_both_plugins():
    dup = QuantType("Q4_0", 250, 32, 18, "qf_plugins.quants.legacy:Q4_0_CODEC", ("symmetric",))
    mod = plugin_module("intruder", qf_register_quant_types=lambda registrar: registrar.add_quant_type(dup))
    with pytest.raises(PluginError, match=r"registered twice: by plugin 'legacy' and by plugin 'intruder'"):
        build_registry(extra_plugins=[("intruder", mod)])


def test_duplicate_strategy_and_type_id():
    same_id = QuantType("OTHER", 2, 32, 18, "qf_plugins.quants.legacy:Q4_0_CODEC", ("symmetric",))
    mod = plugin_module("ids", qf_register_quant_types=lambda registrar: registrar.add_quant_type(same_id))
    with pytest.raises(PluginError, match="id 2 is registered twice for target 'ggml': as Q4_0 by plugin 'legacy'"):
        build_registry(extra_plugins=[("ids", mod)])
    strat = Strategy("rtn", solvers={"symmetric": "qf_plugins.strategies.rtn:symmetric"})
    mod = plugin_module("s", qf_register_strategies=lambda registrar: registrar.add_strategy(strat))
    with pytest.raises(PluginError, match="strategy 'rtn' is registered twice"):
        build_registry(extra_plugins=[("s", mod)])


def test_sizes_checked_against_gguf():
    wrong = QuantType("BADQ8", 8, 32, 33, "qf_plugins.quants.legacy:Q8_0_CODEC", ("symmetric",))
    mod = plugin_module("bad", qf_register_quant_types=lambda registrar: registrar.add_quant_type(wrong))
    with pytest.raises(PluginError, match="GGML_QUANT_SIZES says 32 / 34"):
        build_registry(extra_plugins=[("bad", mod)], load_entry_points=False)


def test_misspelled_hook_is_caught():
    mod = types.ModuleType("typo")
    mod.qf_register_quant_type = hookimpl(lambda registrar: None)  # missing "s"
    with pytest.raises(PluginError, match="typo"):
        build_registry(extra_plugins=[("typo", mod)])


def test_plugin_that_fails_to_import_is_reported(monkeypatch):
    broken = metadata.EntryPoint("broken", "qf_no_such_module_xyz", "qf")
    real = metadata.entry_points

    def fake_entry_points(**kw):
        eps = list(real(**kw))
        return eps + [broken] if kw.get("group") == "qf" else eps

    monkeypatch.setattr(metadata, "entry_points", fake_entry_points)
    reg = build_registry()
    assert [f.entry_point for f in reg.failures] == ["broken = qf_no_such_module_xyz"]
    assert "ModuleNotFoundError" in reg.failures[0].error
    assert "Q4_0" in reg.quant_types  # the others keep working


def test_load_and_disable_plugins(monkeypatch):
    monkeypatch.setenv("QF_LOAD_PLUGINS", "float,ggml,targets")  # float types name the ggml target
    reg = build_registry()
    assert set(reg.quant_types) == {"F32", "F16", "BF16"}
    monkeypatch.delenv("QF_LOAD_PLUGINS")
    monkeypatch.setenv("QF_DISABLE_PLUGINS", "rtn")
    assert "rtn" not in build_registry().strategies


def test_unknown_names():
    reg = get_registry()
    with pytest.raises(UnknownNameError, match="unknown quant type 'Q9_9'"):
        reg.quant_type("Q9_9")
    with pytest.raises(UnknownNameError, match="unknown strategy"):
        reg.strategy("nope")
    assert reg.quant_type("q8_0").name == "Q8_0"


def test_all_registration_hooks_and_commands():
    from qf.values import Arch, Preset

    mod = plugin_module(
        "full",
        qf_register_quant_types=lambda registrar: None,
        qf_register_strategies=lambda registrar: None,
        qf_register_arches=lambda registrar: registrar.add_arch(Arch("toyarch", ("toyarch",))),
        qf_register_presets=lambda registrar: registrar.add_preset(Preset("TOYMIX", 77, "Q8_0")),
        qf_register_commands=lambda cli: cli.command("toy-hello")(lambda: print("hello")),
    )
    reg = build_registry(extra_plugins=[("full", mod)])
    assert reg.arch_for("toyarch").plugin == "full"
    assert reg.arch_for("something-else").name == "generic"
    assert reg.preset("toymix").file_type == 77
    import click

    group = click.Group()
    reg.plugin_manager.hook.qf_register_commands(cli=group)
    assert "toy-hello" in group.commands


def test_registering_imports_no_kernels():
    import subprocess
    import sys

    code = ("import sys; from qf.plugins import get_registry; get_registry(); "
            "print(sorted(m for m in sys.modules if m.startswith('numba') or m.endswith('_kernels')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_plugin_adds_a_problem_kind_and_a_strategy_solving_it():
    """A third-party problem kind: a type posing it works with a strategy that registers a solver for it, and no
    other generic strategy claims it."""
    kind = ProblemKind("sign", "x ≈ d·s, s in {-1, +1}")
    qtype = QuantType("SIGNQ", 203, 32, 20, "qf_plugins.quants.legacy:Q4_1_CODEC", ("sign",))
    strategy = Strategy("signs", solvers={"sign": "qf_plugins.strategies.rtn:symmetric"})
    mod = plugin_module("signs", qf_register_problem_kinds=lambda registrar: registrar.add_problem_kind(kind),
                        qf_register_quant_types=lambda registrar: registrar.add_quant_type(qtype),
                        qf_register_strategies=lambda registrar: registrar.add_strategy(strategy))
    with registered(("signs", mod)) as reg:
        assert reg.problem_kind("sign").plugin == "signs"
        supported = {s.name for s in reg.strategies.values() if s.supports(reg.quant_type("SIGNQ"))}
        assert supported == {"ggml", "signs"}
        assert reg.strategy("signs").solves == ("sign",)


def test_unregistered_problem_kind_is_refused_naming_the_plugin():
    qtype = QuantType("LATQ", 204, 32, 20, "qf_plugins.quants.legacy:Q4_1_CODEC", ("lattice",))
    mod = plugin_module("lat", qf_register_quant_types=lambda registrar: registrar.add_quant_type(qtype))
    with pytest.raises(PluginError, match="plugin 'lat': quant type LATQ poses the unregistered problem kind"):
        build_registry(extra_plugins=[("lat", mod)])


def test_a_target_reuses_ids_keeps_its_base_types_and_replaces_codecs():
    """A fork's own types may reuse a mainline id (ik's IQ1_BN is mainline's TQ1_0 id 34): ids are unique per
    target, mainline lookups never see the fork's types, and the fork's codec for a base type applies only there."""
    fork = Target("fork", base="ggml", exclude=("TQ2_0",), codecs={"Q8_0": "qf_plugins.quants.legacy:Q4_0_CODEC"})
    own = QuantType("FORK34", 34, 64, 13, "qf_plugins.quants.legacy:Q4_0_CODEC", target="fork")
    mod = plugin_module("fork", qf_register_targets=lambda registrar: registrar.add_target(fork),
                        qf_register_quant_types=lambda registrar: registrar.add_quant_type(own))
    with registered(("fork", mod)) as reg:
        assert reg.quant_type_by_id(34).name == "TQ1_0"
        assert reg.quant_type_by_id(34, "fork").name == "FORK34"
        assert "TQ2_0" not in reg.types_of("fork") and "FORK34" not in reg.types_of("ggml")
        assert reg.quant_type("Q8_0", "fork").codec.endswith(":Q4_0_CODEC")
        assert reg.quant_type("Q8_0").codec.endswith(":Q8_0_CODEC")
        assert reg.type_sizes("fork")(34) == (64, 13) and reg.type_sizes()(34) == (256, 54)
        with pytest.raises(UsageError, match="FORK34 is not available for target 'ggml'"):
            reg.quant_type("FORK34", "ggml")
    clash = QuantType("TWIN", 34, 64, 13, "qf_plugins.quants.legacy:Q4_0_CODEC", target="fork")
    twice = plugin_module("twin", qf_register_targets=lambda registrar: registrar.add_target(fork),
                          qf_register_quant_types=lambda registrar: (registrar.add_quant_type(own),
                                                                     registrar.add_quant_type(clash)))
    with pytest.raises(PluginError, match="ggml type id 34 is registered twice for target 'fork'"):
        build_registry(extra_plugins=[("twin", twice)])


def test_solver_is_looked_up_by_problem_kind():
    reg = get_registry()
    gradient = reg.strategy("gradient")
    assert set(gradient.solves) == {"symmetric", "asymmetric", "table"}
    with pytest.raises(KeyError):
        gradient.solve(qf.BlockProblem("lattice", None, None))


class ReversedExecutor(qf.execute.Executor):
    """A test executor: runs the units in reverse order, then hands them back in plan order."""

    name = "reversed"

    def results(self, plan, source, units):
        units = list(units)
        done = {u: qf.execute.run_unit(plan.entries[u.entry], u, source) for u in reversed(units)}
        return ((u, done[u]) for u in units)


def test_an_executor_plugin_gives_the_same_bytes(tmp_path):
    from model_factory import write_model

    spec = qf.ExecutorSpec("reversed", runner=f"{__name__}:ReversedExecutor")
    mod = plugin_module("rev", qf_register_executors=lambda registrar: registrar.add_executor(spec))
    src = write_model(tmp_path / "m.gguf")
    qf.quantize_file(src, tmp_path / "a.gguf", "Q4_K_M", threads=2)
    with registered(("rev", mod)) as reg:
        assert reg.executor("reversed").plugin == "rev" and reg.executor().name == "threads"
        qf.quantize_file(src, tmp_path / "b.gguf", "Q4_K_M", executor="reversed")
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()


def test_an_imatrix_engine_plugin_is_registered_and_looked_up():
    """``qf imatrix --engine`` engines are a plugin kind (tests/arches/test_imatrix_engines.py runs one)."""
    ref = "qf_arches.imatrix.engines:numpy_handles"
    engine = qf.ImatrixEngine("Mine", runner=ref, available=ref, handles=ref, auto_rank=None)
    mod = plugin_module("mine", qf_register_imatrix_engines=lambda registrar: registrar.add_imatrix_engine(engine))
    with registered(("mine", mod)) as reg:
        assert reg.imatrix_engine("mine").plugin == "mine"
        assert {"numpy", "llama.cpp"} <= set(reg.imatrix_engines)
    with pytest.raises(ValueError):
        qf.ImatrixEngine("bad", runner="no colon", available=ref, handles=ref)
