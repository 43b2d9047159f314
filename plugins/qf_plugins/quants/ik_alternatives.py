"""ik_llama.cpp's own searches for mainline types, as :meth:`qf.codec.Codec.alternatives` of their codecs.

ik_llama.cpp writes the same layouts as llama.cpp for these types, with searches of its own (the kernels are in
``_ik_kernels``).  A strategy that keeps native blocks (``gradient``, ``exhaustive``) also keeps ik's blocks where
they fit better, so it is per block never worse than ik's result either.  Where ik's search equals llama.cpp's
(Q4_0 and Q5_0 without an imatrix, Q3_K without one up to float32 underflow, Q8_0, MXFP4) there is no alternative.

Not ported yet (ik's result differs from llama.cpp's, no alternative): Q4_1, Q5_1, Q4_K, Q5_K with an imatrix (ik's
``make_qkx3_quants`` works in double and refines the quants), Q2_K (other σ², no fp16 rounding of the super-block
scales before requantizing, a ternary shortcut without an imatrix).
"""

from __future__ import annotations

import numpy as np

_EMPTY = np.empty(0, np.float32)

#: type -> (kernel, with an imatrix, without one); kernels are ``kernel(x, imatrix_or_empty, out)``
_KERNELS = {
    "Q4_0": ("quantize_q4_0", True, False),
    "Q5_0": ("quantize_q5_0", True, False),
    "Q3_K": ("quantize_q3_k", True, False),
    "Q6_K": ("quantize_q6_k", True, True),
    "IQ4_NL": ("quantize_iq4_nl", True, True),
    "IQ4_XS": ("quantize_iq4_xs", True, True),
}


def ik_alternatives(codec, x: np.ndarray, imatrix: np.ndarray | None) -> list[np.ndarray]:
    """ik's result for ``x`` in ``codec``'s type, as a one-element list; [] where ik's search is llama.cpp's (or not
    ported)."""
    entry = _KERNELS.get(codec.name)
    if entry is None or not entry[1 if imatrix is not None else 2]:
        return []
    from qf_plugins.quants import _ik_kernels

    out = codec.output(x)
    w = _EMPTY if imatrix is None else np.ascontiguousarray(imatrix, np.float32)
    getattr(_ik_kernels, entry[0])(x, w, out)
    return [out]
