"""ik_llama.cpp's own searches for mainline types, as :meth:`qf.codec.Codec.alternatives` of their codecs.

ik_llama.cpp writes the same layouts as llama.cpp for these types, with searches of its own (the kernels are in
``_ik_kernels``).  A strategy that keeps native blocks (``gradient``, ``exhaustive``) also keeps ik's blocks where
they fit better, so it is per block never worse than ik's result either.  Where ik's search equals llama.cpp's
(Q4_0, Q5_0, Q4_1 and Q5_1 without an imatrix; Q3_K, Q4_K and Q5_K without one up to float32 underflow, where ik's
``max − min < 1e-10`` tests count a block of tiny values as constant; Q8_0, MXFP4) there is no alternative.

Q2_K without an imatrix: ik's ``quantize_row_q2_K_ref`` first tests the whole chunk it is given (all rows as one) for
ternary weights ("TriNet"); the alternative applies that test to the rows it is given, as ``ggml_quantize_chunk``
would to the same rows.
"""

from __future__ import annotations

import numpy as np

_EMPTY = np.empty(0, np.float32)

#: type -> (kernel, with an imatrix, without one); kernels are ``kernel(x, imatrix_or_empty, out)``
_KERNELS = {
    "Q4_0": ("quantize_q4_0", True, False),
    "Q5_0": ("quantize_q5_0", True, False),
    "Q4_1": ("quantize_q4_1", True, False),
    "Q5_1": ("quantize_q5_1", True, False),
    "Q2_K": ("quantize_q2_k", True, True),
    "Q3_K": ("quantize_q3_k", True, False),
    "Q4_K": ("quantize_q4_k", True, False),
    "Q5_K": ("quantize_q5_k", True, False),
    "Q6_K": ("quantize_q6_k", True, True),
    "IQ4_NL": ("quantize_iq4_nl", True, True),
    "IQ4_XS": ("quantize_iq4_xs", True, True),
}


def ik_alternatives(codec, x: np.ndarray, imatrix: np.ndarray | None) -> list[np.ndarray]:
    """ik's result for ``x`` in ``codec``'s type, as a one-element list; [] where ik's search is llama.cpp's."""
    entry = _KERNELS.get(codec.name)
    if entry is None or not entry[1 if imatrix is not None else 2]:
        return []
    from qf_plugins.quants import _ik_kernels

    out = codec.output(x)
    w = _EMPTY if imatrix is None else np.ascontiguousarray(imatrix, np.float32)
    getattr(_ik_kernels, entry[0])(x, w, out)
    return [out]
