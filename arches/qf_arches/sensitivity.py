"""Measured per-tensor sensitivity for size targets (``qf sensitivity``).

For every quantizable 2-D weight ``t``, qf's numpy forward pass runs calibration tokens with ``t`` alone replaced by
its quantized-then-dequantized self (probe type, default Q4_0: it fits every row length that is a multiple of 32),
and the KL divergence of the output distribution from the unperturbed model's is measured.  The sensitivity is
``s_t = KLD_t / e_t``, KLD per unit of the tensor's imatrix-weighted relative squared error ``e_t`` under the probe
type, so ``sum_t s_t e_t(c_t)`` predicts the KLD of a whole mix (to first order, perturbations add).  Layer inputs of
the unperturbed run are cached, so a perturbed run starts at the tensor's layer.
"""

from __future__ import annotations

import json
import time

import numpy as np

from qf.names import layer_of


class _NoRecorder:
    def wants(self, name):
        return False

    def dense(self, *a, **k):
        pass

    per_matrix = lookup = experts = dense


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def measure(model_path: str, text: str, imatrix_path: str | None = None, probe: str = "Q4_0", n_tokens: int = 128,
            n_positions: int = 64, log=print) -> dict:
    from qf.api import dequantize_rows, quantize_rows
    from qf.app.aliases import find_model
    from qf.gguf_io import TensorSource
    from qf.imatrix import Imatrix
    from qf.plugins import get_registry
    from qf_arches.forward.common import output_name, rms_norm
    from qf_arches.imatrix.collect import ModelWeights, load_forward
    from qf_arches.imatrix.tokenize import chunk_bos, tokenize_text

    start = time.perf_counter()
    reg = get_registry()
    source = TensorSource.open(find_model(model_path), reg.type_sizes())

    class Cached(ModelWeights):
        override: dict[str, np.ndarray] = {}
        cache: dict[str, np.ndarray] = {}

        def get(self, name):
            if name in self.override:
                return self.override[name]
            if name not in self.cache:
                self.cache[name] = np.ascontiguousarray(super().get(name), np.float32)
            return self.cache[name]

    model = Cached(source)
    fwd = load_forward(model)
    tokens = tokenize_text(model.metadata, text)[:n_tokens].astype(np.int32)
    bos = chunk_bos(model.metadata)
    if bos is not None:
        tokens[0] = bos
    tokens = tokens.reshape(1, -1)
    rec = _NoRecorder()
    head = output_name(model)
    positions = np.arange(tokens.shape[1])
    x = np.ascontiguousarray(model.rows("token_embd.weight", tokens.reshape(-1)), np.float32)
    inputs = []
    for il in range(fwd.n_layer):
        inputs.append(x)
        x = fwd.block(il, x, 1, tokens.shape[1], positions, rec)
    final_x = x

    def logits_from(il: int, x0: np.ndarray) -> np.ndarray:
        x = x0
        for j in range(il, fwd.n_layer):
            x = fwd.block(j, x, 1, tokens.shape[1], positions, rec)
        h = rms_norm(x, model.get("output_norm.weight"), fwd.eps)[-n_positions:]
        return _log_softmax(h @ model.get(head).T)

    ref = logits_from(fwd.n_layer, final_x)
    p_ref = np.exp(ref)
    imatrix = Imatrix.load(imatrix_path) if imatrix_path else None
    qtype = reg.quant_type(probe)
    out: dict = {"model": str(model_path), "probe": probe, "tokens": int(tokens.size), "positions": n_positions,
                 "kld": {}, "error": {}, "weights": {}}
    names = [t.name for t in source.tensors if t.n_dims == 2 and t.name.endswith(".weight")
             and qtype.fits(t.n_per_row) and "norm" not in t.name]
    for name in names:
        t = source.tensor(name)
        w = model.get(name)
        im = imatrix.lookup(name, name, t.n_per_row, 1) if imatrix is not None else None
        im = None if im is None or not im.any() else im[0]
        wq = dequantize_rows(qtype, quantize_rows(qtype, w, im), t.n_per_row)
        weight = np.ones(t.n_per_row) if im is None else im.astype(np.float64)
        err = float((weight * (w.astype(np.float64) - wq) ** 2).sum() / (weight * w.astype(np.float64) ** 2).sum())
        model.override = {name: wq}
        il = layer_of(name)
        if il < 0:  # embedding or head: the whole pass (a tied embedding is both)
            x0 = np.ascontiguousarray(model.rows("token_embd.weight", tokens.reshape(-1)), np.float32)
            if name == "token_embd.weight":
                x0 = np.ascontiguousarray(wq[tokens.reshape(-1)], np.float32)
            lp = logits_from(0, x0) if name == "token_embd.weight" else logits_from(fwd.n_layer, final_x)
        else:
            lp = logits_from(il, inputs[il])
        model.override = {}
        kld = float((p_ref * (ref - lp)).sum(-1).mean())
        out["kld"][name], out["error"][name] = kld, err
        out["weights"][name] = kld / err if err > 0 else 0.0
        log(f"{name}: KLD {kld:.3g}, rel. error {err:.3g}, sensitivity {out['weights'][name]:.3g}")
    out["seconds"] = time.perf_counter() - start
    return out


def write(path: str, result: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
