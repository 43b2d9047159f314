"""Size-targeted mixes against llama.cpp's presets on SmolLM2, KL divergence measured by real llama.cpp.

    python benchmarks/bench_target.py [--out DIR] [--chunks 2] [--random 20] [--sensitivity sens.json]
        [--llcpp-python /work/venvs/llcpp/bin/python]

1. Presets Q2_K, Q3_K_M, IQ4_XS, Q4_0, Q4_K_M (and Q8_0, the floor), written by qf with the golden-e2e imatrix and
   the ggml strategy (byte-identical to llama-quantize), from the SmolLM2 Q4_1 file (--allow-requantize).
2. At each preset's exact file size, ``qf quantize --target-size BYTES PRESET`` (same imatrix, ggml strategy), with
   the default ladder and with a "grid-blind" ladder that leaves out Q4_1 and Q5_1 (which reproduce the Q4_1 grid
   of this model's weights exactly, a free lunch no real model offers).
3. ``--random`` random mixes (per-tensor types drawn around a random level), their predicted loss from the measured
   errors, and Spearman's rank correlation of predicted vs measured KLD.
4. Wall and CPU time of each ``--target-size`` run against quantizing with the base ftype.

KLD(reference || model) with llama.cpp (llama-cpp-python, run as a subprocess in --llcpp-python so qf and llama.cpp
never share a process), reference = the unquantized (F32) model, ctx 512, the second half of each of the first
``--chunks`` chunks of ../shared/data/eval_*.txt.  Writes DIR/results.json and DIR/size_vs_kld.png.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("QF_SHARED", HERE.parents[1] / "shared"))
IMATRIX = SHARED / "golden-e2e" / "smollm2" / "imatrix" / "imatrix.gguf"
PRESETS = ["Q2_K", "Q3_K_M", "IQ4_XS", "Q4_0", "Q4_K_M"]
QF = [sys.executable, "-m", "qf"]
GRID_BLIND = "Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0,Q4_0,Q5_0,IQ4_NL,IQ2_XXS,IQ2_XS,IQ2_S,IQ3_XXS,IQ3_S,IQ4_XS"


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of a subprocess."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def quantize(out: Path, ftype: str, *extra: str) -> tuple[float, float]:
    return timed(QF + ["quantize", "-q", "--allow-requantize", "--imatrix", str(IMATRIX), "@smollm2", str(out),
                       ftype, *extra])


def kld(llcpp: str, ref: Path, models: list[Path], chunks: int, out: Path, threads: int) -> dict[str, dict]:
    req = out.with_suffix(".req.json")
    text = next((SHARED / "data").glob("eval_*.txt"))
    req.write_text(json.dumps({"reference": str(ref), "models": [str(m) for m in models], "text": str(text),
                               "ctx": 512, "chunks": chunks, "threads": threads}))
    res = subprocess.run([llcpp, str(HERE / "_kld_llama.py"), str(req)], check=True, capture_output=True, text=True)
    out.write_text(res.stdout)
    return {Path(r["model"]).name: r for r in map(json.loads, res.stdout.splitlines())}


def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench-target")
    ap.add_argument("--chunks", type=int, default=2)
    ap.add_argument("--random", type=int, default=20)
    ap.add_argument("--random-chunks", type=int, default=1)
    ap.add_argument("--sensitivity")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--llcpp-python", default="/work/venvs/llcpp/bin/python")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sens = ["--sensitivity", args.sensitivity] if args.sensitivity else []
    results: dict = {"presets": {}, "targets": {}, "random": [], "timing": {}}

    def save():
        (out / "results.json").write_text(json.dumps(results, indent=1))

    ref = out / "F32.gguf"
    if not ref.exists():
        subprocess.run(QF + ["quantize", "-q", "--allow-requantize", "@smollm2", str(ref), "F32"], check=True)
    models = []
    for p in PRESETS + ["Q8_0"]:
        path = out / f"preset-{p}.gguf"
        wall, cpu = quantize(path, p)
        results["presets"][p] = {"bytes": path.stat().st_size, "wall": wall, "cpu": cpu}
        models.append(path)
        print(f"preset {p}: {path.stat().st_size} bytes, {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    for p in PRESETS:
        size = results["presets"][p]["bytes"]
        for label, extra in (("qf", []), ("qf-gridblind", ["--target-types", GRID_BLIND])):
            path = out / f"{label}-{p}.gguf"
            recipe = out / f"{label}-{p}.toml"
            wall, cpu = quantize(path, p, "--target-size", str(size), "--save-recipe", str(recipe),
                                 "--plot", str(out / f"{label}-{p}.png"), *extra, *sens)
            results["targets"][f"{label}-{p}"] = {"bytes": path.stat().st_size, "target": size, "wall": wall,
                                                  "cpu": cpu, "base_wall": results["presets"][p]["wall"],
                                                  "base_cpu": results["presets"][p]["cpu"]}
            models.append(path)
            print(f"{label} at {p}: {path.stat().st_size} bytes (target {size}), {wall:.1f} s wall, {cpu:.1f} s CPU",
                  flush=True)
    save()
    # random mixes: per-tensor types around a random level, predicted loss from the measured errors
    sys.path.insert(0, str(HERE.parent / "core"))
    from qf.app.pipeline import make_plan

    plan, _ = make_plan("@smollm2", "Q4_K_M", allow_requantize=True, imatrix=str(IMATRIX), dry_run=True,
                        target_size=str(results["presets"]["Q4_K_M"]["bytes"]),
                        **({"sensitivity": args.sensitivity} if args.sensitivity else {}))
    rng = np.random.default_rng(7)
    random_models = []
    for i in range(args.random):
        level, spread = rng.uniform(0, 1), rng.uniform(0, 0.4)
        rules, pred = [], 0.0
        for c in plan.target.tensors:
            opts = sorted(c.options, key=lambda m: m.size)
            k = int(np.clip(round((level + rng.normal(0, spread)) * (len(opts) - 1)), 0, len(opts) - 1))
            rules.append(f"^{c.name.replace('.', '[.]')}$={opts[k].type_name}")
            pred += c.weight * opts[k].error
        path = out / f"random-{i:02d}.gguf"
        rule_file = out / f"random-{i:02d}.txt"
        rule_file.write_text("\n".join(rules))
        quantize(path, "Q4_K_M", "--tensor-type-file", str(rule_file))
        results["random"].append({"model": path.name, "predicted": pred, "bytes": path.stat().st_size})
        random_models.append(path)
    save()
    measured = kld(args.llcpp_python, ref, models, args.chunks, out / "kld.jsonl", args.threads)
    for p in PRESETS + ["Q8_0"]:
        results["presets"][p].update(measured[f"preset-{p}.gguf"])
    for key in results["targets"]:
        results["targets"][key].update(measured[f"{key}.gguf"])
    save()
    if random_models:
        measured_r = kld(args.llcpp_python, ref, random_models, args.random_chunks, out / "kld-random.jsonl",
                         args.threads)
        for r in results["random"]:
            r.update(measured_r[r["model"]])
        results["spearman"] = spearman([r["predicted"] for r in results["random"]],
                                       [r["kld"] for r in results["random"]])
    save()
    print(f"\nKLD floor (Q8_0): {results['presets']['Q8_0']['kld']:.5f}")
    print("| preset | bytes | KLD preset | KLD qf | change | KLD qf grid-blind | change | time qf / base (wall, CPU) |")
    print("|---|---|---|---|---|---|---|---|")
    for p in PRESETS:
        a, b, g = results["presets"][p], results["targets"][f"qf-{p}"], results["targets"][f"qf-gridblind-{p}"]
        print(f"| {p} | {a['bytes']} | {a['kld']:.5f} ± {a['kld_se']:.5f} | {b['kld']:.5f} ± {b['kld_se']:.5f} |"
              f" {(b['kld'] / a['kld'] - 1) * 100:+.1f}% | {g['kld']:.5f} | {(g['kld'] / a['kld'] - 1) * 100:+.1f}% |"
              f" {b['wall'] / a['wall']:.2f}x, {b['cpu'] / a['cpu']:.2f}x |")
    if "spearman" in results:
        print(f"Spearman(predicted, measured KLD) over {len(results['random'])} random mixes:"
              f" {results['spearman']:.3f}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for key, label, style in (("presets", "llama.cpp presets", "o-"),):
            pts = sorted((v["bytes"] / 2**20, v["kld"], k) for k, v in results[key].items())
            ax.plot([x for x, _, _ in pts], [y for _, y, _ in pts], style, label=label)
            for x, y, k in pts:
                ax.annotate(k, (x, y), fontsize=7)
        for prefix, style in (("qf-", "s-"), ("qf-gridblind-", "^--")):
            pts = sorted((v["bytes"] / 2**20, v["kld"]) for k, v in results["targets"].items()
                         if k.startswith(prefix) and not k.startswith("qf-gridblind-") or prefix == "qf-gridblind-"
                         and k.startswith(prefix))
            ax.plot([x for x, _ in pts], [y for _, y in pts], style, label=f"qf --target-size ({prefix[:-1]})")
        if results["random"]:
            ax.scatter([r["bytes"] / 2**20 for r in results["random"]], [r["kld"] for r in results["random"]],
                       s=10, c="grey", label="random mixes")
        ax.set_yscale("log")
        ax.set_xlabel("file size (MiB)")
        ax.set_ylabel("mean KLD vs F32 (llama.cpp)")
        ax.legend(fontsize=8)
        ax.set_title("SmolLM2-135M: size vs KLD", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "size_vs_kld.png", dpi=130)
    except ImportError:
        pass


if __name__ == "__main__":
    main()
