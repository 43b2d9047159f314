"""DeepSeek V2/V3 (deepseek2): multi-head latent attention and experts, optionally an MTP/NextN block.

MLA as llama.cpp runs it.  With split ``attn_k_b``/``attn_v_b`` (current GGUFs) the query's no-RoPE part is absorbed
through ``attn_k_b`` (one 3-D multiply, a matrix per head: imatrix entry of ``qk_nope`` columns per head), attention
runs MQA-style over the normed latent ``kv_cmpr`` plus the roped ``k_pe`` (the latent cache, float16), and
``attn_v_b`` decompresses each head's latent result (``kv_lora_rank`` columns per head).  Legacy files with only
``attn_kv_b`` decompress K and V first and run ordinary multi-head attention.

Borrowed entries (documented in the run's notes): ``attn_kv_b`` and ``attn_v_b`` both read the ``kv_lora_rank``
latent, so when a model holds both and only one got data (llama.cpp's graph uses ``attn_v_b`` when the split tensors
exist), the other borrows it: ``attn_kv_b`` takes the mean over heads of ``attn_v_b``'s sums, ``attn_v_b`` repeats
``attn_kv_b``'s sums for every head (same counts).  ``attn_k_b`` reads the query, which nothing else does: its entry
only ever comes from collection.
"""

from __future__ import annotations

import math

import numpy as np

from qf_arches.forward.common import Decoder, Rope, attention, linear, rms_norm

F32 = np.float32


class DeepSeek2(Decoder):
    rope_neox = False  # llama.cpp: LLAMA_ROPE_TYPE_NORM for deepseek2

    def setup(self) -> None:
        m = self.model
        self.n_head = int(m.per_layer("attention.head_count", 0))
        self.kv_lora_rank = int(m.hparam("attention.kv_lora_rank"))
        self.q_lora_rank = int(m.hparam("attention.q_lora_rank", 0) or 0)
        self.head_k = int(m.hparam("attention.key_length_mla", 0) or m.hparam("attention.key_length"))
        self.head_v = int(m.hparam("attention.value_length_mla", 0) or m.hparam("attention.value_length"))
        self.n_rot = int(m.hparam("rope.dimension_count"))
        self.nope = self.head_k - self.n_rot
        self.rope = Rope.from_model(m, self.n_rot, False)
        log_mul = float(m.hparam("rope.scaling.yarn_log_multiplier", 0.0) or 0.0) / 0.1
        fs = self.rope.freq_scale
        attn_factor_org = self.rope.attn_factor * (1.0 + 0.1 * math.log(1.0 / fs))
        mscale = attn_factor_org * (1.0 + 0.1 * log_mul * math.log(1.0 / fs))
        self.kq_scale = mscale * mscale / math.sqrt(self.head_k)

    def attention(self, il, h, n_seqs, n_tokens, positions, rec):
        m, p = self.model, f"blk.{il}"
        n, H = n_seqs * n_tokens, self.n_head
        if self.q_lora_rank:
            q = linear(m, rec, f"{p}.attn_q_a.weight", h)
            q = rms_norm(q, m.get(f"{p}.attn_q_a_norm.weight"), self.eps)
            q = linear(m, rec, f"{p}.attn_q_b.weight", q)
        else:
            q = linear(m, rec, f"{p}.attn_q.weight", h)
        q = q.reshape(n_seqs, n_tokens, H, self.head_k)
        kv_pe = linear(m, rec, f"{p}.attn_kv_a_mqa.weight", h)
        kv_cmpr = kv_pe[:, :self.kv_lora_rank]
        k_pe = kv_pe[:, self.kv_lora_rank:].reshape(n_seqs, n_tokens, 1, self.n_rot)
        k_pe = self.rope.apply(k_pe, positions)
        kv_cmpr = rms_norm(kv_cmpr, m.get(f"{p}.attn_kv_a_norm.weight"), self.eps)
        if m.has(f"{p}.attn_k_b.weight"):
            q_nope = q[..., :self.nope]
            q_pe = self.rope.apply(np.ascontiguousarray(q[..., self.nope:]), positions)
            per_head = np.ascontiguousarray(q_nope.reshape(n, H, self.nope).transpose(1, 0, 2))  # (H, n, nope)
            rec.per_matrix(f"{p}.attn_k_b.weight", per_head)
            k_b = m.get(f"{p}.attn_k_b.weight")  # (H, kv_lora_rank, nope)
            absorbed = np.stack([per_head[i] @ k_b[i].T for i in range(H)])  # (H, n, kv_lora_rank)
            absorbed = absorbed.transpose(1, 0, 2).reshape(n_seqs, n_tokens, H, self.kv_lora_rank)
            q_all = np.concatenate([absorbed, q_pe], axis=-1)
            latent = kv_cmpr.reshape(n_seqs, n_tokens, 1, self.kv_lora_rank)
            k_all = np.concatenate([latent, k_pe], axis=-1)
            o = attention(q_all, k_all, latent, self.kq_scale)  # (S, T, H, kv_lora_rank)
            per_head = np.ascontiguousarray(o.reshape(n, H, self.kv_lora_rank).transpose(1, 0, 2))
            rec.per_matrix(f"{p}.attn_v_b.weight", per_head)
            v_b = m.get(f"{p}.attn_v_b.weight")  # (H, head_v, kv_lora_rank)
            out = np.stack([per_head[i] @ v_b[i].T for i in range(H)]).transpose(1, 0, 2).reshape(n, H * self.head_v)
        else:
            kv = linear(m, rec, f"{p}.attn_kv_b.weight", kv_cmpr).reshape(n_seqs, n_tokens, H, self.nope + self.head_v)
            k_nope, v = kv[..., :self.nope], kv[..., self.nope:]
            q = self.rope.apply(q, positions, offset=self.nope)
            k = np.concatenate([k_nope, np.broadcast_to(k_pe, (n_seqs, n_tokens, H, self.n_rot))], axis=-1)
            out = attention(q, k, np.ascontiguousarray(v), self.kq_scale).reshape(n, H * self.head_v)
        return linear(m, rec, f"{p}.attn_output.weight", out)

    def finalize(self, stats) -> None:
        m = self.model
        for il in range(self.n_layer + self.n_nextn):
            kv_b, v_b = f"blk.{il}.attn_kv_b.weight", f"blk.{il}.attn_v_b.weight"
            if not (m.has(kv_b) and m.has(v_b)):
                continue
            if kv_b not in stats.entries and v_b in stats.entries:
                src = stats.entries[v_b]
                sums = src.sums.reshape(-1, self.kv_lora_rank).mean(axis=0, dtype=np.float64).astype(F32)
                e = stats.entry(kv_b, 1, self.kv_lora_rank)
                e.sums[0] = sums
                e.counts[:] = src.counts.max()
                stats.notes.append(f"{kv_b}: borrowed from {v_b} (mean over heads; same latent input)")
            elif v_b not in stats.entries and kv_b in stats.entries:
                src = stats.entries[kv_b]
                n_head = m.shape(v_b)[2]
                e = stats.entry(v_b, n_head, self.kv_lora_rank)
                e.sums[:] = src.sums.reshape(1, self.kv_lora_rank)
                e.counts[:] = src.counts.max()
                stats.notes.append(f"{v_b}: borrowed from {kv_b} (repeated for each head; same latent input)")


def build(model):
    return DeepSeek2(model)
