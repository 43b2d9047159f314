"""GLM families: GLM-4.5 MoE (glm4moe), with MTP/NextN layers (``blk.<n_layer>.nextn.*``) counted in block_count,
and glm5-next with llama.cpp's exceptions (tensors it never quantizes, projections kept at Q8_0 or better)."""

from __future__ import annotations

from qf import Arch, hookimpl

GLM4MOE = Arch("glm4moe", ("glm4moe",), facts="qf_arches._facts:generic", forward="qf_arches.forward.glm:build",
               description="GLM-4.5 mixture of experts with an MTP/NextN layer")

GLM5_NEXT_RULES = """
[[rule]]
role = "*"
when = "'attn_q_a' in name or 'attn_q_b' in name or 'nextn.eh_proj' in name"
type = "Q8_0"
"""
GLM5_NEXT = Arch("glm5-next", ("glm5-next",), facts="qf_arches._facts:glm5_next", rules=GLM5_NEXT_RULES,
                 description="GLM-5 next: attn_q_a/attn_q_b/nextn.eh_proj at Q8_0, indexer/SSM tensors kept")


@hookimpl
def qf_register_arches(registrar):
    registrar.add_arch(GLM4MOE)
    registrar.add_arch(GLM5_NEXT)
