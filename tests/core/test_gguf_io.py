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
from qf.gguf_io.kv import StringArray
from qf.gguf_io.reader import LAZY_STRINGS
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


@pytest.mark.parametrize("where,needle", [
    ("in-kvs", "reading key of KV #0 at byte 24"),          # 6 bytes into the first KV
    ("in-tensor-infos", "reading dims of 'token_embd.weight'"),
    ("at-data-start", "tensor 'token_embd.weight' needs bytes"),  # header complete, no tensor data
    ("one-byte-short", "tensor 'blk.1.ffn_down.weight' needs bytes"),
])
def test_truncated(model, tmp_path, where, needle):
    data = model.read_bytes()
    f = GGUFFile.open(model)
    first_info = data.index(b"token_embd.weight") + len("token_embd.weight")  # the first tensor info's name, read
    keep = {"in-kvs": 30, "in-tensor-infos": first_info + 2, "at-data-start": f.data_offset,
            "one-byte-short": len(data) - 1}[where]
    assert 24 < keep < len(data)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:keep])
    with pytest.raises(GGUFFormatError, match="truncated") as info:
        GGUFFile.open(cut)
    assert needle in str(info.value) and f"has {keep}" in str(info.value) and "cut.gguf" in str(info.value)


def test_long_string_array_is_checked_at_open_and_decoded_on_use(tmp_path):
    """A vocabulary-sized string array (LAZY_STRINGS items or more) keeps its bytes and decodes when first read: the
    same values and bytes as a short one, non-UTF-8 items included, and a truncated one is refused at open."""
    words = [f"tok{i}" for i in range(LAZY_STRINGS + 5)]
    words[7] = "\udcff\udcfe"  # bytes ff fe, not UTF-8: kept as surrogates
    words[8] = "é" * 300
    path = write_model(tmp_path / "v.gguf", extra_kvs=(make_kv("tokenizer.ggml.tokens", T.ARRAY, words, T.STRING),))
    f = GGUFFile.open(path)
    vocab = f.get("tokenizer.ggml.tokens")
    assert isinstance(vocab, StringArray) and len(vocab) == len(words)
    assert vocab == words and list(vocab) == words and vocab[7] == words[7] and vocab[-1] == words[-1]
    assert vocab.encoded.count(b"\xff\xfe") == 1
    kv = next(kv for kv in f.kvs if kv.key == "tokenizer.ggml.tokens")
    assert make_kv(kv.key, kv.vtype, kv.value, kv.item_type).raw == kv.raw  # written back byte for byte
    assert make_kv(kv.key, kv.vtype, list(kv.value), kv.item_type).raw == kv.raw
    tensors = [OutTensor(t.name, t.shape, t.type_id, t.n_bytes) for t in f.tensors]
    assert header_bytes(f.kvs, tensors) == bytes(f.data[:f.data_offset])

    data = path.read_bytes()
    last = data.index(words[-1].encode())  # cut inside the last item
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:last + 2])
    with pytest.raises(GGUFFormatError, match=r"cut.gguf: truncated .* reading value of 'tokenizer.ggml.tokens'"):
        GGUFFile.open(cut)
    huge = bytearray(data)  # an item length that runs past the end of the file
    at = data.index(b"tok10") - 8
    huge[at:at + 8] = (1 << 40).to_bytes(8, "little")
    cut.write_bytes(bytes(huge))
    with pytest.raises(GGUFFormatError, match=rf"needs {1 << 40} bytes"):
        GGUFFile.open(cut)


@pytest.mark.parametrize("keep", [0, 4, 23])
def test_shorter_than_a_header(model, tmp_path, keep):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(model.read_bytes()[:keep])
    with pytest.raises(GGUFFormatError, match=rf"cut.gguf: not a GGUF file \(only {keep} bytes\)"):
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
