"""Past this machine, by simulation: what quantizing a model far too big for it would take on a cluster.

    python benchmarks/estimate.py --make-header deepseek-v3 /tmp/dsv3.gguf   # header-only GGUF (sparse file)
    python benchmarks/estimate.py /tmp/dsv3.gguf --ftype Q4_K_M --cores 32 --workers 1,8,64

``--make-header`` writes a GGUF whose header (metadata and tensor infos) is DeepSeek-V3 671B's, as llama.cpp's
converter lays it out (deepseek2 architecture, MLA with attn_k_b/attn_v_b, 3 dense layers then 58 MoE layers of 256
routed + 1 shared expert; BF16 matrices, F32 norms; no MTP layer), and whose data is a hole: the file is truncated to
its full size without writing it, so it takes a few MB on disk but opens like the real thing.  Only ``--dry-run``
(and ``--estimate``) may use it — the weights read as zeros.

The table: for each strategy, the plan's CPU-seconds (kernel throughput measured on this machine, per core) and the
wall time on N workers of C cores, bounded by compute, the workers' input reads or the client's output writes
(``qf.app.estimate``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from gguf.constants import GGUFValueType as T

from qf.gguf_io import OutTensor, make_kv
from qf.gguf_io.writer import header_bytes, pad

ALIGN = 32
F32, BF16 = 0, 30


def deepseek_v3():
    """(kvs, tensors) of DeepSeek-V3 / R1 (671B) as llama.cpp's convert_hf_to_gguf writes it (BF16)."""
    n_embd, n_layer, n_dense, n_ff, n_ff_exp, n_expert, n_vocab = 7168, 61, 3, 18432, 2048, 256, 129280
    n_head, q_lora, kv_lora, nope, rope, v_dim = 128, 1536, 512, 128, 64, 128
    a = "deepseek2"
    kvs = [make_kv("general.architecture", T.STRING, a), make_kv("general.type", T.STRING, "model"),
           make_kv("general.name", T.STRING, "DeepSeek V3 (header only)"),
           make_kv("general.file_type", T.UINT32, 32),  # MOSTLY_BF16
           make_kv(f"{a}.block_count", T.UINT32, n_layer), make_kv(f"{a}.context_length", T.UINT32, 163840),
           make_kv(f"{a}.embedding_length", T.UINT32, n_embd), make_kv(f"{a}.feed_forward_length", T.UINT32, n_ff),
           make_kv(f"{a}.attention.head_count", T.UINT32, n_head),
           make_kv(f"{a}.attention.head_count_kv", T.UINT32, 1),
           make_kv(f"{a}.rope.freq_base", T.FLOAT32, 10000.0),
           make_kv(f"{a}.attention.layer_norm_rms_epsilon", T.FLOAT32, 1e-6),
           make_kv(f"{a}.expert_count", T.UINT32, n_expert), make_kv(f"{a}.expert_used_count", T.UINT32, 8),
           make_kv(f"{a}.leading_dense_block_count", T.UINT32, n_dense),
           make_kv(f"{a}.vocab_size", T.UINT32, n_vocab),
           make_kv(f"{a}.attention.q_lora_rank", T.UINT32, q_lora),
           make_kv(f"{a}.attention.kv_lora_rank", T.UINT32, kv_lora),
           make_kv(f"{a}.attention.key_length", T.UINT32, kv_lora + rope),
           make_kv(f"{a}.attention.value_length", T.UINT32, kv_lora),
           make_kv(f"{a}.attention.key_length_mla", T.UINT32, nope + rope),
           make_kv(f"{a}.attention.value_length_mla", T.UINT32, v_dim),
           make_kv(f"{a}.expert_feed_forward_length", T.UINT32, n_ff_exp),
           make_kv(f"{a}.expert_shared_count", T.UINT32, 1),
           make_kv(f"{a}.expert_weights_scale", T.FLOAT32, 2.5),
           make_kv(f"{a}.expert_weights_norm", T.BOOL, True), make_kv(f"{a}.expert_gating_func", T.UINT32, 2),
           make_kv(f"{a}.rope.dimension_count", T.UINT32, rope)]
    shapes = {"token_embd.weight": (n_embd, n_vocab)}
    for i in range(n_layer):
        p = f"blk.{i}."
        shapes |= {p + "attn_norm.weight": (n_embd,), p + "attn_q_a.weight": (n_embd, q_lora),
                   p + "attn_q_a_norm.weight": (q_lora,), p + "attn_q_b.weight": (q_lora, n_head * (nope + rope)),
                   p + "attn_kv_a_mqa.weight": (n_embd, kv_lora + rope), p + "attn_kv_a_norm.weight": (kv_lora,),
                   p + "attn_k_b.weight": (nope, kv_lora, n_head), p + "attn_v_b.weight": (kv_lora, v_dim, n_head),
                   p + "attn_output.weight": (n_head * v_dim, n_embd), p + "ffn_norm.weight": (n_embd,)}
        if i < n_dense:
            shapes |= {p + "ffn_gate.weight": (n_embd, n_ff), p + "ffn_up.weight": (n_embd, n_ff),
                       p + "ffn_down.weight": (n_ff, n_embd)}
        else:
            shapes |= {p + "ffn_gate_inp.weight": (n_embd, n_expert), p + "exp_probs_b.bias": (n_expert,),
                       p + "ffn_gate_exps.weight": (n_embd, n_ff_exp, n_expert),
                       p + "ffn_up_exps.weight": (n_embd, n_ff_exp, n_expert),
                       p + "ffn_down_exps.weight": (n_ff_exp, n_embd, n_expert),
                       p + "ffn_gate_shexp.weight": (n_embd, n_ff_exp), p + "ffn_up_shexp.weight": (n_embd, n_ff_exp),
                       p + "ffn_down_shexp.weight": (n_ff_exp, n_embd)}
    shapes |= {"output_norm.weight": (n_embd,), "output.weight": (n_embd, n_vocab)}
    tensors = []
    for name, shape in shapes.items():
        n = int(np.prod(shape))
        keep_f32 = len(shape) == 1 or name.endswith("ffn_gate_inp.weight")
        tensors.append(OutTensor(name, shape, F32 if keep_f32 else BF16, n * (4 if keep_f32 else 2)))
    return kvs, tensors


MODELS = {"deepseek-v3": deepseek_v3}


def make_header(model: str, path: Path) -> Path:
    """A GGUF with the model's header and a hole for its data (a sparse file of the full size)."""
    kvs, tensors = MODELS[model]()
    head = header_bytes(kvs, tensors, ALIGN)
    total = len(head) + sum(pad(t.n_bytes, ALIGN) for t in tensors)
    with open(path, "wb") as fh:
        fh.write(head)
        fh.truncate(total)
    n = sum(int(np.prod(t.shape)) for t in tensors)
    print(f"wrote {path}: {len(tensors)} tensors, {n / 1e9:.1f} B parameters, {total / 1e12:.2f} TB (sparse;"
          f" {len(head)} header bytes)", file=sys.stderr)
    return path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", help="a GGUF (e.g. made with --make-header)")
    ap.add_argument("--make-header", nargs=2, metavar=("MODEL", "OUT"), help=f"one of {', '.join(MODELS)}")
    ap.add_argument("--ftype", default="Q4_K_M")
    ap.add_argument("--strategies", default="ggml,gradient,exhaustive")
    ap.add_argument("--workers", default="1,8,64")
    ap.add_argument("--cores", type=int, default=32, help="cores per worker (throughput is measured per core here)")
    ap.add_argument("--groups", action="store_true", help="print each strategy's per-group table too")
    args = ap.parse_args(argv)
    if args.make_header:
        path = make_header(args.make_header[0], Path(args.make_header[1]))
        if args.model is None:
            return
    else:
        path = args.model
    if path is None:
        ap.error("give a model, or --make-header")
    from qf.app.estimate import Cluster, estimate_report, groups, hms, stages
    from qf.app.pipeline import make_plan

    workers = [int(w) for w in args.workers.split(",")]
    rows = []
    for strategy in args.strategies.split(","):
        plan, _source = make_plan(path, args.ftype, strategy=strategy, dry_run=True)
        if args.groups:
            print(f"== {strategy}\n{estimate_report(plan, workers, args.cores)}\n")
        gs = groups(plan)
        cpu = sum(g.cpu_seconds for g in gs)
        for n in workers:
            st = stages(plan, gs, Cluster(n, args.cores))
            rows.append((strategy, n, cpu, st, plan.bytes_in, plan.bytes_out))
    c = Cluster(1, args.cores)
    print(f"{Path(path).name} -> {args.ftype}; {args.cores} cores per worker; assumed {c.worker_read / 1e9:g} GB/s"
          f" read per worker (storage {c.storage_read / 1e9:g} GB/s in all), {c.client_write / 1e9:g} GB/s client"
          f" write")
    print("| strategy | workers | CPU-h | compute | input read | client write | wall | bound |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for strategy, n, cpu, st, _bytes_in, _bytes_out in rows:
        print(f"| {strategy} | {n} | {cpu / 3600:.1f} | {hms(st.compute)} | {hms(st.input)} | {hms(st.client)} |"
              f" {hms(st.wall)} | {st.bound} |")
    if rows:
        print(f"input {rows[0][4] / 1e9:.0f} GB, output {rows[0][5] / 1e9:.0f} GB")


if __name__ == "__main__":
    main()
