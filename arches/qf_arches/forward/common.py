"""Building blocks of the numpy forward passes, numerically close to llama.cpp's CPU graph.

Activations are float32 rows ``(n_rows, width)`` with ``n_rows = n_seqs * n_tokens`` in sequence-major order (the
order :class:`qf_arches.imatrix.collect.Recorder` expects).  Every multiply on a model weight goes through
:func:`linear` (or the MoE/MLA helpers), which first hands the input to the recorder, as llama-imatrix's callback
sees it.

Where llama.cpp rounds, we round too: the KV cache holds K and V as float16 (its default cache type), RMSNorm sums
squares in double, RoPE angles are float32 products of ``base^(-2/n_dims)``; all else is float32.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from qf_arches.imatrix.collect import HeadInput, ModelWeights, Recorder

F32 = np.float32
#: attention query rows per block (bounds the score matrix: heads x rows x keys)
QUERY_BLOCK = 512


# -- elementwise -----------------------------------------------------------------------------------------------------
def rms_norm(x: np.ndarray, weight: np.ndarray | None, eps: float) -> np.ndarray:
    """ggml_rms_norm (Σx² in double) followed by the weight multiply."""
    ms = np.einsum("...i,...i->...", x, x, dtype=np.float64) / x.shape[-1]
    scale = (F32(1) / np.sqrt(ms.astype(F32) + F32(eps))).astype(F32)
    y = x * scale[..., None]
    return y * weight if weight is not None else y


def silu(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return x / (F32(1) + np.exp(-x))


def swiglu(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """silu(gate) * up."""
    from qf_arches.forward import _kernels

    gate = np.ascontiguousarray(gate, F32).reshape(-1, gate.shape[-1])
    out = np.empty_like(gate)
    _kernels.swiglu(gate, np.ascontiguousarray(up, F32).reshape(gate.shape), out)
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return F32(1) / (F32(1) + np.exp(-x))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True, dtype=np.float64).astype(F32)).astype(F32)


def to_f16(x: np.ndarray) -> np.ndarray:
    """Round through float16, as a value stored in llama.cpp's F16 KV cache."""
    return x.astype(np.float16).astype(F32)


# -- weights ---------------------------------------------------------------------------------------------------------
def linear(model: ModelWeights, rec: Recorder, name: str, x: np.ndarray, bias: str | None = None) -> np.ndarray:
    """``x @ W.T`` (+ bias) for a 2-D weight, recorded."""
    rec.dense(name, x)
    y = x @ model.get(name).T
    if bias is not None and model.has(bias):
        y += model.get(bias)
    return y


def embed(model: ModelWeights, name: str, tokens: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(model.rows(name, tokens.reshape(-1)), dtype=F32)


# -- rotary embeddings -----------------------------------------------------------------------------------------------
@attrs.frozen(eq=False)
class Rope:
    """ggml_rope_ext's parameters (normal = pairs of neighbours, neox = halves)."""

    n_dims: int
    freq_base: float = 10000.0
    neox: bool = False
    freq_scale: float = 1.0
    ext_factor: float = 0.0
    attn_factor: float = 1.0
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    n_ctx_orig: int = 0
    freq_factors: np.ndarray | None = None

    @classmethod
    def from_model(cls, model: ModelWeights, n_dims: int, neox: bool, freq_factors: np.ndarray | None = None) -> Rope:
        """llama.cpp's context parameters for RoPE (linear and YaRN scaling, rope_freqs factors)."""
        scaling = model.hparam("rope.scaling.type", "linear")
        factor = float(model.hparam("rope.scaling.factor", 0.0) or model.hparam("rope.scale_linear", 0.0) or 0.0)
        freq_scale = 1.0 if scaling == "none" or factor == 0.0 else 1.0 / factor
        ext_factor = 1.0 if scaling == "yarn" else 0.0
        attn_factor = 1.0
        if ext_factor != 0.0:
            def mscale(scale: float, m: float) -> float:
                return 1.0 if scale <= 1.0 else 0.1 * m * math.log(scale) + 1.0

            f = 1.0 / freq_scale
            log_mul = float(model.hparam("rope.scaling.yarn_log_multiplier", 0.0))
            if model.arch == "deepseek2" and log_mul:
                log_mul /= 0.1  # llama.cpp cancels the converter's factor
            if log_mul != 0.0:
                m = log_mul if (model.arch == "deepseek2" and log_mul != 1.0) else 1.0
                attn_factor = mscale(f, m) / mscale(f, log_mul)
            else:
                attn_factor = mscale(f, 1.0)
            attn_factor *= 1.0 / (1.0 + 0.1 * math.log(f))
        attn_factor *= float(model.hparam("rope.scaling.attn_factor", 1.0))
        n_ctx_orig = int(model.hparam("rope.scaling.original_context_length", 0) or model.hparam("context_length", 0))
        return cls(n_dims, float(model.hparam("rope.freq_base", 10000.0)), neox, freq_scale, ext_factor, attn_factor,
                   32.0, 1.0, n_ctx_orig, freq_factors)

    def tables(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """cos and sin ``(len(positions), n_dims // 2)`` as ggml_rope_cache_init computes them (float32 angles)."""
        half = self.n_dims // 2
        theta_scale = F32(self.freq_base) ** F32(-2.0 / self.n_dims)
        theta = np.empty((positions.size, half), F32)
        t = positions.astype(F32)
        for i in range(half):  # theta *= theta_scale, in float32, as ggml iterates
            theta[:, i] = t
            t = (t * theta_scale).astype(F32)
        if self.freq_factors is not None:
            theta = (theta / self.freq_factors[:half].astype(F32)).astype(F32)
        extrap = theta
        theta = (F32(self.freq_scale) * extrap).astype(F32)
        mscale = F32(self.attn_factor)
        if self.ext_factor != 0.0:
            low, high = self._corr_dims()
            i0 = np.arange(half, dtype=F32)
            y = (i0 - F32(low)) / F32(max(0.001, high - low))
            ramp = ((F32(1) - np.minimum(F32(1), np.maximum(F32(0), y))) * F32(self.ext_factor)).astype(F32)
            theta = (theta * (F32(1) - ramp) + extrap * ramp).astype(F32)
            mscale = F32(mscale * F32(1.0 + 0.1 * math.log(1.0 / self.freq_scale)))
        cos = (np.cos(theta.astype(np.float64)).astype(F32) * mscale).astype(F32)
        sin = (np.sin(theta.astype(np.float64)).astype(F32) * mscale).astype(F32)
        return cos, sin

    def _corr_dims(self) -> tuple[float, float]:
        def corr(rot: float) -> float:
            return self.n_dims * math.log(self.n_ctx_orig / (rot * 2 * math.pi)) / (2 * math.log(self.freq_base))

        start = math.floor(corr(self.beta_fast))
        end = math.ceil(corr(self.beta_slow))
        return max(0.0, start), min(self.n_dims - 1.0, end)

    def apply(self, x: np.ndarray, positions: np.ndarray, offset: int = 0) -> np.ndarray:
        """Rotate ``x`` ``(n_seqs, n_tokens, n_heads, head_dim)`` at ``positions`` ``(n_tokens,)``; dimensions
        ``offset .. offset + n_dims`` rotate, the rest pass through."""
        cos, sin = self.tables(positions)
        cos, sin = cos[None, :, None, :], sin[None, :, None, :]
        y = x.copy()
        part = x[..., offset:offset + self.n_dims]
        if self.neox:
            half = self.n_dims // 2
            x0, x1 = part[..., :half], part[..., half:]
            y[..., offset:offset + half] = x0 * cos - x1 * sin
            y[..., offset + half:offset + self.n_dims] = x0 * sin + x1 * cos
        else:
            x0, x1 = part[..., 0::2], part[..., 1::2]
            y[..., offset:offset + self.n_dims:2] = x0 * cos - x1 * sin
            y[..., offset + 1:offset + self.n_dims:2] = x0 * sin + x1 * cos
        return y


# -- attention -------------------------------------------------------------------------------------------------------
def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """Causal attention per sequence (see :func:`attention_reference`; a numba kernel does the work)."""
    from qf_arches.forward import _kernels

    n_seqs, n_tokens, n_head, _ = q.shape
    out = np.empty((n_seqs, n_tokens, n_head, v.shape[3]), F32)
    kt = np.ascontiguousarray(to_f16(k).transpose(0, 2, 3, 1))  # (S, Hkv, Dk, T)
    vh = np.ascontiguousarray(to_f16(v).transpose(0, 2, 1, 3))  # (S, Hkv, T, Dv)
    _kernels.causal_attention(np.ascontiguousarray(q, F32), kt, vh, F32(scale), out)
    return out


def attention_reference(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """Causal attention per sequence.  ``q`` ``(n_seqs, n_tokens, n_head, dk)``, ``k`` ``(.., n_head_kv, dk)``, ``v``
    ``(.., n_head_kv, dv)`` (grouped heads: query head h reads KV head ``h // (n_head / n_head_kv)``).  K and V are
    rounded to float16 as llama.cpp's KV cache stores them; returns ``(n_seqs, n_tokens, n_head, dv)``."""
    n_seqs, n_tokens, n_head, _ = q.shape
    n_head_kv = k.shape[2]
    group = n_head // n_head_kv
    k16, v16 = to_f16(k), to_f16(v)
    out = np.empty((n_seqs, n_tokens, n_head, v.shape[3]), F32)
    scale = F32(scale)
    for s in range(n_seqs):
        for g in range(n_head_kv):
            kg = np.ascontiguousarray(k16[s, :, g, :])  # (T, dk)
            vg = np.ascontiguousarray(v16[s, :, g, :])  # (T, dv)
            qg = np.ascontiguousarray(q[s, :, g * group:(g + 1) * group, :].transpose(1, 0, 2))  # (group, T, dk)
            for start in range(0, n_tokens, QUERY_BLOCK):
                stop = min(n_tokens, start + QUERY_BLOCK)
                rows = stop - start
                # 2-D products: numpy hands those to BLAS (stacked 3-D ones with a transposed operand it does not)
                scores = (qg[:, start:stop].reshape(group * rows, -1) @ kg[:stop].T).reshape(group, rows, stop)
                scores *= scale
                future = np.arange(stop)[None, :] > np.arange(start, stop)[:, None]
                scores[:, future] = -np.inf
                scores -= scores.max(axis=-1, keepdims=True)
                np.exp(scores, out=scores)
                total = scores.sum(axis=-1, keepdims=True)
                o = (scores.reshape(group * rows, stop) @ vg[:stop]).reshape(group, rows, -1) / total
                out[s, start:stop, g * group:(g + 1) * group, :] = o.transpose(1, 0, 2)
    return out


# -- feed-forward ----------------------------------------------------------------------------------------------------
def swiglu_ffn(model: ModelWeights, rec: Recorder, prefix: str, x: np.ndarray, suffix: str = "") -> np.ndarray:
    """``down(silu(gate(x)) * up(x))`` with ``<prefix>.ffn_{up,gate,down}<suffix>.weight``."""
    up = linear(model, rec, f"{prefix}.ffn_up{suffix}.weight", x, f"{prefix}.ffn_up{suffix}.bias")
    gate = linear(model, rec, f"{prefix}.ffn_gate{suffix}.weight", x, f"{prefix}.ffn_gate{suffix}.bias")
    act = swiglu(gate, up)
    return linear(model, rec, f"{prefix}.ffn_down{suffix}.weight", act, f"{prefix}.ffn_down{suffix}.bias")


@attrs.frozen
class MoeSpec:
    """build_moe_ffn's parameters."""

    n_expert: int
    n_expert_used: int
    gating: str = "softmax"  # softmax | sigmoid
    norm_weights: bool = False
    weights_scale: float = 0.0
    n_groups: int = 0
    n_groups_used: int = 0

    @classmethod
    def from_model(cls, model: ModelWeights, norm_weights: bool | None = None, gating: str | None = None,
                   default_gating: str = "softmax") -> MoeSpec:
        """``gating``/``norm_weights`` fixed by the graph, else from ``expert_gating_func`` (1 softmax, 2 sigmoid;
        ``default_gating`` when absent) and ``expert_weights_norm``."""
        func = int(model.hparam("expert_gating_func", 0) or 0)
        if gating is None:
            gating = {1: "softmax", 2: "sigmoid"}.get(func, default_gating)
        if norm_weights is None:
            norm_weights = bool(model.hparam("expert_weights_norm", False))
        return cls(int(model.hparam("expert_count")), int(model.hparam("expert_used_count")), gating, norm_weights,
                   float(model.hparam("expert_weights_scale", 0.0) or 0.0),
                   int(model.hparam("expert_group_count", 0) or 0),
                   int(model.hparam("expert_group_used_count", 0) or 0))


def route(spec: MoeSpec, logits: np.ndarray, bias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Selected experts ``(n, k)`` (best first, as ggml_argsort_top_k) and their weights ``(n, k)``."""
    if spec.gating == "softmax":
        probs = softmax(logits)
    elif spec.gating == "sigmoid":
        probs = sigmoid(logits)
    else:
        raise ValueError(f"unknown expert gating {spec.gating!r}")
    selection = probs + bias if bias is not None else probs
    if spec.n_groups > 1:
        n = selection.shape[0]
        groups = selection.reshape(n, spec.n_groups, -1)
        top2 = -np.sort(-groups, axis=-1)[..., :2].sum(axis=-1)  # (n, n_groups)
        keep = np.argsort(-top2, axis=-1, kind="stable")[:, :spec.n_groups_used]
        mask = np.full(groups.shape, -np.inf, F32)
        np.put_along_axis(mask, keep[..., None], np.take_along_axis(groups, keep[..., None], axis=1), axis=1)
        selection = mask.reshape(n, -1)
    selected = np.argsort(-selection, axis=-1, kind="stable")[:, :spec.n_expert_used].astype(np.int32)
    weights = np.take_along_axis(probs, selected, axis=-1)
    if spec.norm_weights:
        total = np.maximum(weights.sum(axis=-1, keepdims=True), F32(6.103515625e-5))
        weights = weights / total
    if spec.weights_scale not in (0.0, 1.0):
        weights = weights * F32(spec.weights_scale)
    return selected, weights.astype(F32)


def moe_ffn(model: ModelWeights, rec: Recorder, prefix: str, x: np.ndarray, spec: MoeSpec) -> np.ndarray:
    """build_moe_ffn with separate ``ffn_{gate,up,down}_exps`` (SwiGLU), recorded per expert like mul_mat_id."""
    logits = linear(model, rec, f"{prefix}.ffn_gate_inp.weight", x)
    bias = model.get_opt(f"{prefix}.exp_probs_b.bias")
    selected, weights = route(spec, logits, bias)
    n, k = selected.shape
    up_name, gate_name, down_name = (f"{prefix}.ffn_{p}_exps.weight" for p in ("up", "gate", "down"))
    rec.experts(up_name, x[:, None, :], selected, spec.n_expert)
    rec.experts(gate_name, x[:, None, :], selected, spec.n_expert)
    n_ff = model.shape(down_name)[0]
    act = np.zeros((n, k, n_ff), F32)
    for e in np.unique(selected):
        rows, slots = np.nonzero(selected == e)
        xe = x[rows]
        gate = xe @ model.matrix(gate_name, int(e)).T
        up = xe @ model.matrix(up_name, int(e)).T
        act[rows, slots] = swiglu(gate, up)
    rec.experts(down_name, act, selected, spec.n_expert)
    out = np.zeros((n, k, x.shape[1]), F32)
    for e in np.unique(selected):
        rows, slots = np.nonzero(selected == e)
        out[rows, slots] = act[rows, slots] @ model.matrix(down_name, int(e)).T
    out *= weights[:, :, None]
    total = out[:, 0].copy()
    for slot in range(1, k):  # ggml adds the experts' views in slot order
        total += out[:, slot]
    return total


# -- output ----------------------------------------------------------------------------------------------------------
def output_name(model: ModelWeights) -> str:
    return "output.weight" if model.has("output.weight") else "token_embd.weight"


def head_input(rec: Recorder, h: np.ndarray, n_seqs: int, n_tokens: int, logits_from: int | None,
               weight: str) -> HeadInput | None:
    """The LM head's input rows ``logits_from..`` of the normed hidden rows ``h``.  The head multiply is recorded
    over all rows (llama-imatrix keeps it for ``blk.*`` heads, and ``output.weight`` only with --process-output,
    which asks for every row; a tied head is named token_embd and never kept)."""
    if logits_from == 0 or weight.startswith("blk."):
        rec.dense(weight, h)
    if logits_from is None:
        return None
    rows = h.reshape(n_seqs, n_tokens, -1)[:, logits_from:]
    return HeadInput(np.ascontiguousarray(rows), weight)


# -- a pre-norm decoder ----------------------------------------------------------------------------------------------
class Decoder:
    """A pre-norm decoder-only transformer in llama.cpp's shape: embed, blocks (attention then FFN, each with a
    residual), output norm, LM head; an MTP/NextN head on ``blk.<n_layer>`` when the model has one.

    Families subclass it and set the class attributes or override :meth:`attention` / :meth:`ffn`."""

    #: rotate halves (NEOX) rather than neighbouring pairs
    rope_neox = False
    #: name of the norm before the FFN (glm4moe: post_attention_norm)
    ffn_norm = "ffn_norm"
    #: MoE gating when general hyper-parameters do not say (llama, qwen3moe: softmax with normalised weights)
    moe_gating: str | None = None
    moe_default_gating = "softmax"
    moe_norm_weights: bool | None = None
    #: the MTP head takes the trunk's hidden state after output_norm (llama.cpp's h_nextn for glm4moe, deepseek2)
    mtp_hidden_normed = True

    def __init__(self, model: ModelWeights) -> None:
        self.model = model
        self.eps = float(model.hparam("attention.layer_norm_rms_epsilon"))
        self.n_nextn = int(model.hparam("nextn_predict_layers", 0) or 0)
        self.n_layer = int(model.hparam("block_count")) - self.n_nextn
        self.n_embd = int(model.hparam("embedding_length"))
        self.n_vocab = int(model.shape("token_embd.weight")[1])
        self.n_dense_lead = int(model.hparam("leading_dense_block_count", 0) or 0)
        self.moe = (MoeSpec.from_model(model, self.moe_norm_weights, self.moe_gating, self.moe_default_gating)
                    if model.hparam("expert_count", 0) else None)
        self.has_mtp = self.n_nextn > 0 and model.has(f"blk.{self.n_layer}.nextn.eh_proj.weight")
        self.setup()

    # hyper-parameters of the standard attention
    def setup(self) -> None:
        m = self.model
        self.n_head = int(m.per_layer("attention.head_count", 0))
        self.n_head_kv = int(m.per_layer("attention.head_count_kv", 0, self.n_head) or self.n_head)
        self.head_k = int(m.hparam("attention.key_length", 0) or self.n_embd // self.n_head)
        self.head_v = int(m.hparam("attention.value_length", 0) or self.head_k)
        n_rot = int(m.hparam("rope.dimension_count", 0) or self.head_k)
        self.rope = Rope.from_model(m, n_rot, self.rope_neox, m.get_opt("rope_freqs.weight"))
        scale = float(m.hparam("attention.scale", 0.0) or 0.0)
        self.kq_scale = scale if scale else 1.0 / math.sqrt(self.head_k)

    # the passes
    def trunk(self, tokens: np.ndarray, rec: Recorder, logits_from: int | None, keep_hidden: bool):
        n_seqs, n_tokens = tokens.shape
        x = embed(self.model, "token_embd.weight", tokens)
        positions = np.arange(n_tokens)
        for il in range(self.n_layer):
            x = self.block(il, x, n_seqs, n_tokens, positions, rec)
        h = rms_norm(x, self.model.get("output_norm.weight"), self.eps)
        head = head_input(rec, h, n_seqs, n_tokens, logits_from, output_name(self.model))
        hidden = None
        if keep_hidden:
            hidden = (h if self.mtp_hidden_normed else x).reshape(n_seqs, n_tokens, -1)
        return head, hidden

    def block(self, il: int, x: np.ndarray, n_seqs: int, n_tokens: int, positions: np.ndarray,
              rec: Recorder) -> np.ndarray:
        m = self.model
        h = rms_norm(x, m.get(f"blk.{il}.attn_norm.weight"), self.eps)
        x = x + self.attention(il, h, n_seqs, n_tokens, positions, rec)
        h = rms_norm(x, m.get(f"blk.{il}.{self.ffn_norm}.weight"), self.eps)
        return x + self.ffn(il, h, rec)

    def attention(self, il: int, h: np.ndarray, n_seqs: int, n_tokens: int, positions: np.ndarray,
                  rec: Recorder) -> np.ndarray:
        m, p = self.model, f"blk.{il}"
        if m.has(f"{p}.attn_qkv.weight"):
            qkv = linear(m, rec, f"{p}.attn_qkv.weight", h, f"{p}.attn_qkv.bias")
            nq, nk = self.n_head * self.head_k, self.n_head_kv * self.head_k
            q, k, v = qkv[:, :nq], qkv[:, nq:nq + nk], qkv[:, nq + nk:]
        else:
            q = linear(m, rec, f"{p}.attn_q.weight", h, f"{p}.attn_q.bias")
            k = linear(m, rec, f"{p}.attn_k.weight", h, f"{p}.attn_k.bias")
            v = linear(m, rec, f"{p}.attn_v.weight", h, f"{p}.attn_v.bias")
        q = q.reshape(n_seqs, n_tokens, self.n_head, self.head_k)
        k = k.reshape(n_seqs, n_tokens, self.n_head_kv, self.head_k)
        v = v.reshape(n_seqs, n_tokens, self.n_head_kv, self.head_v)
        if m.has(f"{p}.attn_q_norm.weight"):
            q = rms_norm(q, m.get(f"{p}.attn_q_norm.weight"), self.eps)
        if m.has(f"{p}.attn_k_norm.weight"):
            k = rms_norm(k, m.get(f"{p}.attn_k_norm.weight"), self.eps)
        q, k = self.rope.apply(q, positions), self.rope.apply(k, positions)
        o = attention(q, k, v, self.kq_scale).reshape(n_seqs * n_tokens, self.n_head * self.head_v)
        return linear(m, rec, f"{p}.attn_output.weight", o, f"{p}.attn_output.bias")

    def ffn(self, il: int, h: np.ndarray, rec: Recorder) -> np.ndarray:
        m, p = self.model, f"blk.{il}"
        if self.moe is None or not m.has(f"{p}.ffn_gate_inp.weight"):
            return swiglu_ffn(m, rec, p, h)
        out = moe_ffn(m, rec, p, h, self.moe)
        if m.has(f"{p}.ffn_up_shexp.weight"):
            out = out + swiglu_ffn(m, rec, p, h, "_shexp")
        return out

    def mtp(self, tokens: np.ndarray, hidden: np.ndarray, rec: Recorder, logits_from: int | None):
        """llama.cpp's NextN draft head: ``eh_proj(concat(enorm(embed(t[k])), hnorm(h[k-1])))``, the MTP block at
        position k, ``shared_head_norm`` and ``shared_head_head`` (or the trunk's output norm and head)."""
        m, il = self.model, self.n_layer
        p = f"blk.{il}.nextn"
        n_seqs, n_tokens = tokens.shape
        next_tokens = tokens[:, 1:]
        embed_name = f"{p}.embed_tokens.weight" if m.has(f"{p}.embed_tokens.weight") else "token_embd.weight"
        e = embed(m, embed_name, next_tokens)
        rec.lookup(embed_name, e.shape[0], e.shape[1])
        h = np.ascontiguousarray(hidden[:, :-1]).reshape(-1, hidden.shape[-1])
        cat = np.concatenate([rms_norm(e, m.get(f"{p}.enorm.weight"), self.eps),
                              rms_norm(h, m.get(f"{p}.hnorm.weight"), self.eps)], axis=1)
        x = linear(m, rec, f"{p}.eh_proj.weight", cat)
        x = self.block(il, x, n_seqs, n_tokens - 1, np.arange(1, n_tokens), rec)
        norm = f"{p}.shared_head_norm.weight" if m.has(f"{p}.shared_head_norm.weight") else "output_norm.weight"
        out = rms_norm(x, m.get(norm), self.eps)
        head = f"{p}.shared_head_head.weight" if m.has(f"{p}.shared_head_head.weight") else output_name(m)
        return head_input(rec, out, n_seqs, n_tokens - 1, logits_from, head)

    def finalize(self, stats) -> None:
        return None
