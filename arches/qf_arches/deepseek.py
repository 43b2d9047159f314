"""DeepSeek-V2/V3 (deepseek2): MLA attention (attn_kv_b, or split attn_k_b / attn_v_b) and experts.

llama.cpp has no rules of its own for attn_k_b / attn_v_b: they take the ftype's default type (attn_v_b is not
in the attn_v category), then the shape fallback (attn_k_b has 128 columns)."""

from __future__ import annotations

from qf import Arch, hookimpl

DEEPSEEK2 = Arch("deepseek2", ("deepseek2",), facts="qf_arches._facts:generic",
                 forward="qf_arches.forward.deepseek:build",
                 description="DeepSeek V2/V3: MLA + mixture of experts")


@hookimpl
def qf_register_arches(registrar):
    registrar.add_arch(DEEPSEEK2)
