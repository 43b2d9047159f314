"""GGUF reading and writing: agreement with the gguf package, exact KV round trips, clear errors."""

from __future__ import annotations

import types

import gguf
import numpy as np
import pytest
from gguf.constants import GGUFValueType as T

from model_factory import write_model
from qf import QuantType, hookimpl
from qf.errors import GGUFFormatError
from qf.gguf_io import GGUFFile, GGUFStreamWriter, OutTensor, make_kv
from qf.gguf_io.writer import header_bytes
from qf.plugins import registered


@pytest.fixture
def model(tmp_path):
    extra = (make_kv("test.array", T.ARRAY, [1, 2, 3], T.INT32), make_kv("test.strs", T.ARRAY, ["a", "bé"], T.STRING),
             make_kv("test.f", T.FLOAT32, 0.5), make_kv("test.b", T.BOOL, True))
    return write_model(tmp_path / "m.gguf", dtype="F16", extra_kvs=extra)


def test_reader_agrees_with_gguf(model):
    ours = GGUFFile.open(model)
    theirs = gguf.GGUFReader(model)
    their_keys = [k for k in theirs.fields if not k.startswith("GGUF.")]
    assert [kv.key for kv in ours.kvs] == their_keys
    assert ours.get("test.strs") == ["a", "bé"]
    assert list(ours.get("test.array")) == [1, 2, 3]
    assert ours.data_offset == theirs.data_offset
    for t, rt in zip(ours.tensors, theirs.tensors):
        assert t.name == rt.name
        assert t.shape == tuple(int(d) for d in rt.shape)
        assert t.type_id == int(rt.tensor_type)
        assert t.offset == rt.data_offset and t.n_bytes == rt.n_bytes
        assert ours.tensor_data(t).tobytes() == np.asarray(rt.data).tobytes()


def test_header_round_trip_is_byte_exact(model):
    f = GGUFFile.open(model)
    tensors = [OutTensor(t.name, t.shape, t.type_id, t.n_bytes) for t in f.tensors]
    assert header_bytes(f.kvs, tensors) == bytes(f.data[:f.data_offset])


def test_make_kv_matches_gguf_writer_encoding(tmp_path):
    path = tmp_path / "w.gguf"
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_uint32("a.u32", 7)
    w.add_string("a.s", "hello")
    w.add_array("a.arr", [1.5, 2.5])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    f = GGUFFile.open(path)
    for kv in f.kvs:
        assert make_kv(kv.key, kv.vtype, kv.value, kv.item_type).raw == kv.raw, kv.key


def test_not_gguf(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(GGUFFormatError, match=r"x.gguf: not a GGUF file"):
        GGUFFile.open(p)


@pytest.mark.parametrize("keep", [30, 200, -100])
def test_truncated(model, tmp_path, keep):
    data = model.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:keep] if keep > 0 else data[:keep])
    with pytest.raises(GGUFFormatError, match="truncated"):
        GGUFFile.open(cut)


def test_unknown_type_id_needs_a_plugin(tmp_path):
    path = tmp_path / "u.gguf"
    with open(path, "wb") as fh:
        w = GGUFStreamWriter(fh, [make_kv("general.architecture", T.STRING, "llama")],
                             [OutTensor("w.weight", (32, 2), 222, 2 * 9)])
        w.begin("w.weight")
        w.write(np.arange(18, dtype=np.uint8))
        w.close()
    with pytest.raises(GGUFFormatError, match="ggml type id 222, which no installed plugin knows"):
        GGUFFile.open(path)
    mod = types.ModuleType("t222")
    mod.qf_register_quant_types = hookimpl(lambda registrar: registrar.add_quant_type(
        QuantType("T222", 222, 32, 9, "qf_plugins.quants.legacy:Q4_0_CODEC", ("symmetric",))))
    with registered(("t222", mod)) as registry:
        f = GGUFFile.open(path, registry.type_sizes())  # the reader knows the types it is told of
        assert f.tensors[0].n_bytes == 18
        assert f.rows(f.tensors[0], 0, 2).tobytes() == bytes(range(18))
