"""ik_llama.cpp's own quant types, with ik's GGUF type ids (ggml/include/ggml.h of the commit in REFERENCE.md).

All of these exist only in ik_llama.cpp's runtime: each has ``target="ik"``, and the ``ik`` target (mainline's types
but those ik lacks, plus these) is registered from ``qf_register_targets``.

Fallbacks are ik's ``change_type_if_necessary`` (llama-quantize.cpp): a row length that is not a multiple of 256
goes to IQ4_NL (IQ2/IQ3 types), Q5_0 (IQ4_K), Q6_0 (IQ5_K) or Q8_0 (IQ6_K).  No type here needs an imatrix
(ik's ``ggml_quantize_requires_imatrix`` lists only IQ2_XXS, IQ2_XS and IQ1_S).
"""

from __future__ import annotations

from qf import QuantType, Target, hookimpl

TARGET = "ik"
_C = "qf_ik.codecs"

# mainline (ggml) types that ik_llama.cpp does not have (its id 41 is Q1_0_G128, not mainline's Q1_0)
MAINLINE_ONLY = ("TQ1_0", "TQ2_0", "Q1_0", "Q2_0", "NVFP4")

# ik's own quantizers for mainline types where they write other bytes (see the report for the others)
IK_CODECS = {"Q6_K": f"{_C}:Q6_K_IK"}

# ik's llama-quantize writes tensors in the input's order, and its metadata its own way (qf.metadata.output_kvs)
IK = Target(
    TARGET, base="ggml", exclude=MAINLINE_ONLY, codecs=IK_CODECS,
    description="ik_llama.cpp (ikawrakow), commit 8337e4c: its own types, and mainline's but those it lacks",
    tensor_order="file", kv_style="ik_llama.cpp",
)


def _t(name, type_id, block, size, fallback=None, row_meta=0, description=""):
    # the _R4 repacks: ik's interleaved_properties (4 rows, the base type)
    interleave = (4, name.removesuffix("_R4")) if name.endswith("_R4") else None
    return QuantType(name, type_id, block, size, f"{_C}:{name}", (), ggml_name=name.lower(), fallback=fallback,
                     target=TARGET, row_meta_size=row_meta, description=f"ik: {description}",
                     interleave=interleave)


# fallbacks: ik's change_type_if_necessary (llama-quantize.cpp), for rows that are not a multiple of 256
QUANT_TYPES = (
    _t("Q6_0", 133, 32, 26, None, 0, "6.5 bpw, fp16 scale per 32"),
    _t("IQ2_K", 137, 256, 76, "IQ4_NL", 0, "2.375 bpw non-linear, 4-bit scales per 16"),
    _t("IQ3_K", 138, 256, 110, "IQ4_NL", 0, "3.4375 bpw non-linear, 4-bit scales + sign per 16"),
    _t("IQ4_K", 139, 256, 144, "Q5_0", 0, "4.5 bpw non-linear, 6-bit scales per 16"),
    _t("IQ5_K", 140, 256, 176, "Q6_0", 0, "5.5 bpw non-linear, 6-bit scales per 16"),
    _t("IQ6_K", 141, 256, 212, "Q8_0", 0, "6.625 bpw non-linear, 8-bit scales per 16"),
    # row-scaled types: a float (fp16 for IQ2_KS/IQ3_KS/IQ2_KL) before each row's blocks
    _t("IQ2_KS", 145, 256, 70, "IQ4_NL", 2, "2.1875 bpw non-linear, blocks of 32"),
    _t("IQ2_KL", 157, 256, 86, "IQ4_NL", 2, "2.69 bpw, pairs from a 2-D grid"),
    _t("IQ3_KS", 156, 256, 102, "IQ4_NL", 2, "3.1875 bpw non-linear, blocks of 32"),
    _t("IQ4_KS", 144, 256, 136, "IQ4_NL", 4, "4.25 bpw non-linear, blocks of 32"),
    _t("IQ4_KSS", 146, 256, 128, "IQ4_NL", 4, "4.0 bpw non-linear, blocks of 32"),
    _t("IQ5_KS", 152, 256, 168, "Q5_0", 4, "5.25 bpw non-linear, blocks of 32"),
    # trellis types: groups of 8 (IQ4_KT: 4) from a pseudo-random codebook, a float per row
    _t("IQ1_KT", 158, 256, 56, "IQ4_NL", 4, "1.75 bpw trellis"),
    _t("IQ2_KT", 153, 256, 68, "IQ4_NL", 4, "2.125 bpw trellis"),
    _t("IQ3_KT", 154, 256, 100, "IQ4_NL", 4, "3.125 bpw trellis"),
    _t("IQ4_KT", 155, 256, 128, "IQ4_NL", 4, "4.0 bpw trellis"),
    # row-interleaved repacks: 4 rows quantized as the base type, then interleaved (rows must come in fours; ik's
    # llama-quantize writes the base type otherwise, and never repacks token embeddings)
    _t("Q6_0_R4", 233, 32, 26, None, 0, "Q6_0, 4 rows interleaved"),
    _t("IQ2_K_R4", 337, 256, 76, "IQ4_NL", 0, "IQ2_K, 4 rows interleaved"),
    _t("IQ3_K_R4", 338, 256, 110, "IQ4_NL", 0, "IQ3_K, 4 rows interleaved"),
    _t("IQ4_K_R4", 339, 256, 144, "Q5_0", 0, "IQ4_K, 4 rows interleaved"),
    _t("IQ5_K_R4", 340, 256, 176, "Q6_0", 0, "IQ5_K, 4 rows interleaved"),
    _t("IQ4_KS_R4", 344, 256, 136, "IQ4_NL", 4, "IQ4_KS, 4 rows interleaved"),
    _t("IQ5_KS_R4", 352, 256, 168, "Q5_0", 4, "IQ5_KS, 4 rows interleaved"),
)
BY_NAME = {t.name: t for t in QUANT_TYPES}


@hookimpl
def qf_register_targets(registrar):
    registrar.add_target(IK)


@hookimpl
def qf_register_quant_types(registrar):
    for qtype in QUANT_TYPES:
        registrar.add_quant_type(qtype)


def implemented() -> list[tuple[str, int, int]]:
    """(name, ik type id, block size) of every type qf_ik has a codec for."""
    return [(t.name, t.type_id, t.block_size) for t in QUANT_TYPES]


def overrides() -> list[tuple[str, int, int, str]]:
    """(mainline type, id, block size, qf_ik.codecs attribute) of ik's own quantizers for mainline types."""
    return [("Q6_K", 14, 256, "Q6_K_IK")]
