"""ik_llama.cpp's own quant types, with ik's GGUF type ids (ggml/include/ggml.h of the commit in REFERENCE.md).

All of these exist only in ik_llama.cpp's runtime: once qf's core has targets, each gets ``target="ik"`` (the
commented field below) and the ``ik`` target is registered from ``qf_register_targets``.  Their ids (133 and up)
do not clash with mainline's, so they can be registered in the common registry already.

Fallbacks are ik's ``change_type_if_necessary`` (llama-quantize.cpp): a row length that is not a multiple of 256
goes to IQ4_NL (IQ2/IQ3 types), Q5_0 (IQ4_K), Q6_0 (IQ5_K) or Q8_0 (IQ6_K).  No type here needs an imatrix
(ik's ``ggml_quantize_requires_imatrix`` lists only IQ2_XXS, IQ2_XS and IQ1_S).
"""

from __future__ import annotations

from qf import QuantType, hookimpl

TARGET = "ik"  # for QuantType(..., target=TARGET) once the core API exists
_C = "qf_ik.codecs"

QUANT_TYPES = (
    QuantType("Q6_0", 133, 32, 26, f"{_C}:Q6_0", (), ggml_name="q6_0",
              description="ik: 6.5 bpw, fp16 scale per 32 (ik_llama.cpp only)"),  # target=TARGET
    QuantType("IQ2_K", 137, 256, 76, f"{_C}:IQ2_K", (), ggml_name="iq2_k", fallback="IQ4_NL",
              description="ik: 2.375 bpw non-linear, 4-bit scales per 16 (ik_llama.cpp only)"),
    QuantType("IQ3_K", 138, 256, 110, f"{_C}:IQ3_K", (), ggml_name="iq3_k", fallback="IQ4_NL",
              description="ik: 3.4375 bpw non-linear, 4-bit scales + sign per 16 (ik_llama.cpp only)"),
    QuantType("IQ4_K", 139, 256, 144, f"{_C}:IQ4_K", (), ggml_name="iq4_k", fallback="Q5_0",
              description="ik: 4.5 bpw non-linear, 6-bit scales per 16 (ik_llama.cpp only)"),
    QuantType("IQ5_K", 140, 256, 176, f"{_C}:IQ5_K", (), ggml_name="iq5_k", fallback="Q6_0",
              description="ik: 5.5 bpw non-linear, 6-bit scales per 16 (ik_llama.cpp only)"),
    QuantType("IQ6_K", 141, 256, 212, f"{_C}:IQ6_K", (), ggml_name="iq6_k", fallback="Q8_0",
              description="ik: 6.625 bpw non-linear, 8-bit scales per 16 (ik_llama.cpp only)"),
    # row-interleaved repacks: 4 rows quantized as the base type, then interleaved (rows must come in fours)
    QuantType("Q6_0_R4", 233, 32, 26, f"{_C}:Q6_0_R4", (), ggml_name="q6_0_r4",
              description="ik: Q6_0, 4 rows interleaved"),
    QuantType("IQ2_K_R4", 337, 256, 76, f"{_C}:IQ2_K_R4", (), ggml_name="iq2_k_r4", fallback="IQ4_NL",
              description="ik: IQ2_K, 4 rows interleaved"),
    QuantType("IQ3_K_R4", 338, 256, 110, f"{_C}:IQ3_K_R4", (), ggml_name="iq3_k_r4", fallback="IQ4_NL",
              description="ik: IQ3_K, 4 rows interleaved"),
    QuantType("IQ4_K_R4", 339, 256, 144, f"{_C}:IQ4_K_R4", (), ggml_name="iq4_k_r4", fallback="Q5_0",
              description="ik: IQ4_K, 4 rows interleaved"),
    QuantType("IQ5_K_R4", 340, 256, 176, f"{_C}:IQ5_K_R4", (), ggml_name="iq5_k_r4", fallback="Q6_0",
              description="ik: IQ5_K, 4 rows interleaved"),
)


# Types whose rows start with a scale (ik's row_meta_size: fp16 = 2 bytes or float32 = 4): a row is
# row_meta + n/256·type_size bytes, which
# QuantType cannot express yet (row_bytes = n/block·type_size), so they are not registered; their codecs are complete
# and tested.  (name, type_id, block_size, type_size, row_meta, codec, fallback)
ROW_META_TYPES = (
    ("IQ2_KS", 145, 256, 70, 2, f"{_C}:IQ2_KS", "IQ4_NL"),
    ("IQ2_KL", 157, 256, 86, 2, f"{_C}:IQ2_KL", "IQ4_NL"),
    ("IQ3_KS", 156, 256, 102, 2, f"{_C}:IQ3_KS", "IQ4_NL"),
    ("IQ4_KS", 144, 256, 136, 4, f"{_C}:IQ4_KS", "IQ4_NL"),
    ("IQ4_KSS", 146, 256, 128, 4, f"{_C}:IQ4_KSS", "IQ4_NL"),
    ("IQ1_KT", 158, 256, 56, 4, f"{_C}:IQ1_KT", "IQ4_NL"),
    ("IQ2_KT", 153, 256, 68, 4, f"{_C}:IQ2_KT", "IQ4_NL"),
    ("IQ3_KT", 154, 256, 100, 4, f"{_C}:IQ3_KT", "IQ4_NL"),
    ("IQ4_KT", 155, 256, 128, 4, f"{_C}:IQ4_KT", "IQ4_NL"),
    ("IQ5_KS", 152, 256, 168, 4, f"{_C}:IQ5_KS", "Q5_0"),
    ("IQ4_KS_R4", 344, 256, 136, 4, f"{_C}:IQ4_KS_R4", "IQ4_NL"),
    ("IQ5_KS_R4", 352, 256, 168, 4, f"{_C}:IQ5_KS_R4", "Q5_0"),
)


@hookimpl
def qf_register_quant_types(registrar):
    for qtype in QUANT_TYPES:
        registrar.add_quant_type(qtype)


def implemented() -> list[tuple[str, int, int]]:
    """(name, ik type id, block size) of every type qf_ik has a codec for, registered or not (yet)."""
    return [(t.name, t.type_id, t.block_size) for t in QUANT_TYPES] + [(n, i, b) for n, i, b, *_ in ROW_META_TYPES]
