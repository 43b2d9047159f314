"""Size-targeted mixes against llama.cpp's presets on a real model, KL divergence measured by real llama.cpp.

    python benchmarks/bench_target.py [--model @smollm2] [--out DIR] [--chunks 2] [--random 20]
        [--sensitivity sens.json] [--imatrix FILE] [--no-gradient] [--llcpp-python /work/venvs/llcpp/bin/python]

1. Presets Q2_K, Q3_K_M, IQ4_XS, Q4_0, Q4_K_M (and Q8_0, the floor), written by qf with the same imatrix and the
   ggml strategy (byte-identical to llama-quantize), from the model (--allow-requantize); with ``--gradient`` (the
   default) the same presets with ``--strategy gradient``.
2. At each preset's exact file size, ``qf quantize --target-size BYTES PRESET`` (same imatrix): with the default
   ladder ("qf"), with a "grid-blind" ladder that leaves out every type the input file already holds ("blind": a type
   that reproduces the input's own grid exactly is a free lunch no real model offers), and grid-blind with
   ``--strategy gradient`` ("blind+gradient").
3. The grid-blind curve below the smallest preset (``--curve`` fractions of its size), and for each preset the file
   size at which the grid-blind curve reaches the preset's KLD (log-linear interpolation of KLD above the floor); and
   measured directly, a grid-blind file ``--smaller`` (0.9) times each preset's size and its KLD.
4. ``--random`` random mixes (per-tensor types drawn around a random level), their predicted loss from the measured
   errors, and Spearman's rank correlation of predicted vs measured KLD.
5. Wall and CPU time of each ``--target-size`` run (no measurement cache: every error measured) against quantizing
   with the base ftype and against quantizing the chosen mix from its ``--save-recipe`` file (which must give the same
   bytes: the cost of choosing alone), and of a second run at another size with the measurement cache and ``--sensitivity`` if
   given (what a user making several sizes pays after the first).

Without ``--imatrix`` the golden-e2e imatrix serves SmolLM2; any other model gets one from ``qf imatrix`` on
../shared/data/calib_*.txt (``--imatrix-chunks`` chunks of 512; llama.cpp's engine where qf has no numpy pass, so
run this script in a Python that has llama_cpp then).  KLD(reference || model) with llama.cpp (llama-cpp-python,
run as a subprocess in --llcpp-python so qf and llama.cpp never share a process), reference = the unquantized (F32)
model, ctx 512, the second half of each of the first ``--chunks`` chunks of ../shared/data/eval_*.txt.  Changes are
reported on KLD above the floor (the Q8_0 file's KLD: llama.cpp quantizes activations for quantized weights).
Writes DIR/results.json and DIR/size_vs_kld.png.
"""

from __future__ import annotations

import argparse
import filecmp
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
SMOLLM2_IMATRIX = SHARED / "golden-e2e" / "smollm2" / "imatrix" / "imatrix.gguf"
PRESETS = ["Q2_K", "Q3_K_M", "IQ4_XS", "Q4_0", "Q4_K_M"]
QF = [sys.executable, "-m", "qf"]
LADDER = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL", "IQ2_XXS",
          "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_XS"]


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of a subprocess."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def kld(llcpp: str, ref: Path, models: list[Path], chunks: int, out: Path, threads: int) -> dict[str, dict]:
    req = out.with_suffix(".req.json")
    text = next((SHARED / "data").glob("eval_*.txt"))
    req.write_text(json.dumps({"reference": str(ref), "models": [str(m) for m in models], "text": str(text),
                               "ctx": 512, "chunks": chunks, "threads": threads}))
    res = subprocess.run([llcpp, str(HERE / "_kld_llama.py"), str(req)], check=True, capture_output=True, text=True)
    out.write_text(res.stdout)
    return {Path(r["model"]).name: r for r in map(json.loads, res.stdout.splitlines())}


def plot(path: Path) -> list[str]:
    """``--plot PATH`` where matplotlib is installed (the optional extra ``qf[plot]``)."""
    import importlib.util

    return ["--plot", str(path)] if importlib.util.find_spec("matplotlib") else []


def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def size_at_kld(curve: list[tuple[int, float]], kld: float, floor: float) -> tuple[float | None, str]:
    """The file size at which a (size, KLD) curve reaches ``kld``: log-linear interpolation of KLD above the floor
    between the two points around it; (None, why) when it lies outside the curve."""
    pts = sorted((s, max(k - floor, 1e-9)) for s, k in curve)
    want = max(kld - floor, 1e-9)
    for (s0, k0), (s1, k1) in zip(pts, pts[1:]):
        if min(k0, k1) <= want <= max(k0, k1) and k0 != k1:
            f = (np.log(want) - np.log(k0)) / (np.log(k1) - np.log(k0))
            return s0 + f * (s1 - s0), ""
    if want > pts[0][1]:
        return None, f"< {pts[0][0]}"  # the preset is worse than even the smallest qf file measured
    return None, "above the curve"


def source_types(model: str) -> set[str]:
    from qf.app.aliases import find_model
    from qf.gguf_io import TensorSource
    from qf.plugins import get_registry

    reg = get_registry()
    src = TensorSource.open(find_model(model))
    return {reg.quant_type_by_id(t.type_id).name for t in src.tensors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="@smollm2")
    ap.add_argument("--out", default="bench-target")
    ap.add_argument("--chunks", type=int, default=2)
    ap.add_argument("--random", type=int, default=20)
    ap.add_argument("--random-chunks", type=int, default=1)
    ap.add_argument("--curve", default="0.8,0.9", help="grid-blind targets at these fractions of the smallest preset")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--smaller", type=float, default=0.9, help="grid-blind files at this fraction of each preset")
    ap.add_argument("--no-gradient", action="store_true")
    ap.add_argument("--imatrix")
    ap.add_argument("--imatrix-chunks", type=int, default=32)
    ap.add_argument("--sensitivity")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--llcpp-python", default="/work/venvs/llcpp/bin/python")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    presets = args.presets.split(",")
    sens = ["--sensitivity", args.sensitivity] if args.sensitivity else []
    results: dict = {"model": args.model, "presets": {}, "targets": {}, "curve": {}, "smaller": {}, "random": [],
                     "timing": {}}

    def save():
        (out / "results.json").write_text(json.dumps(results, indent=1))

    ref = out / "F32.gguf"
    if not ref.exists():
        subprocess.run(QF + ["quantize", "-q", "--allow-requantize", args.model, str(ref), "F32"], check=True)
    imatrix = args.imatrix or (str(SMOLLM2_IMATRIX) if args.model == "@smollm2" else None)
    if imatrix is None:
        imatrix = str(out / "imatrix.gguf")
        if not Path(imatrix).exists():
            calib = next((SHARED / "data").glob("calib_*.txt"))
            subprocess.run(QF + ["imatrix", str(ref), "-f", str(calib), "-o", imatrix, "-c", "512", "--chunks",
                                 str(args.imatrix_chunks), "-t", str(args.threads)], check=True)
    held = source_types(args.model)
    blind = ",".join(t for t in LADDER if t not in held)
    results["held_types"], results["blind_ladder"] = sorted(held), blind
    print(f"input holds {sorted(held)}; grid-blind ladder {blind}", flush=True)

    def quantize(path: Path, ftype: str, *extra: str) -> tuple[float, float]:
        return timed(QF + ["quantize", "-q", "--allow-requantize", "--imatrix", imatrix, args.model, str(path),
                           ftype, *extra])

    models = []
    strategies = ["ggml"] + ([] if args.no_gradient else ["gradient"])
    for strategy in strategies:
        for p in presets + ([] if strategy != "ggml" else ["Q8_0"]):
            key = p if strategy == "ggml" else f"{p}+gradient"
            path = out / f"preset-{key}.gguf"
            wall, cpu = quantize(path, p, "--strategy", strategy)
            results["presets"][key] = {"bytes": path.stat().st_size, "wall": wall, "cpu": cpu}
            models.append(path)
            print(f"preset {key}: {path.stat().st_size} bytes, {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    labels = [("qf", [], "ggml"), ("blind", ["--target-types", blind], "ggml")]
    if not args.no_gradient:
        labels.append(("blind+gradient", ["--target-types", blind, "--strategy", "gradient"], "gradient"))
    for p in presets:
        size = results["presets"][p]["bytes"]
        for label, extra, strategy in labels:
            key = f"{label}-{p}"
            path = out / f"{key}.gguf"
            wall, cpu = quantize(path, p, "--target-size", str(size), "--save-recipe", str(out / f"{key}.toml"),
                                 *plot(out / f"{key}.png"), "--target-cache", "off", *extra, *sens)
            base = results["presets"][p if strategy == "ggml" else f"{p}+{strategy}"]
            results["targets"][key] = {"bytes": path.stat().st_size, "target": size, "wall": wall, "cpu": cpu,
                                       "base_wall": base["wall"], "base_cpu": base["cpu"]}
            models.append(path)
            # the same mix quantized directly from the saved recipe: what the choosing itself costs
            again = out / f"recipe-{key}.gguf"
            mix_wall, _ = timed(QF + ["quantize", "-q", "--allow-requantize", "--imatrix", imatrix, "--recipe",
                                      str(out / f"{key}.toml"), args.model, str(again)])
            results["targets"][key].update(mix_wall=mix_wall, recipe_same_bytes=filecmp.cmp(path, again, False))
            again.unlink()
            print(f"{key}: {path.stat().st_size} bytes (target {size}), {wall:.1f} s wall ({wall / base['wall']:.2f}x"
                  f" base, {wall / mix_wall:.2f}x the mix from its recipe), {cpu:.1f} s CPU", flush=True)
    for p in presets:  # a file --smaller times the preset's size: is its KLD at most the preset's?
        path = out / f"smaller-{p}.gguf"
        quantize(path, p, "--target-size", str(int(results["presets"][p]["bytes"] * args.smaller)), "--target-types",
                 blind, "--target-cache", str(out / "cache"), *sens)
        results["smaller"][p] = {"bytes": path.stat().st_size, "fraction": args.smaller}
        models.append(path)
    smallest = min(results["presets"][p]["bytes"] for p in presets)
    for frac in [float(f) for f in args.curve.split(",") if f]:
        path = out / f"curve-{frac:g}.gguf"
        quantize(path, presets[0], "--target-size", str(int(smallest * frac)), "--target-types", blind, *sens)
        results["curve"][path.name] = {"bytes": path.stat().st_size, "fraction": frac}
        models.append(path)
    # a user making a second size: the errors the first run measured come from the cache
    cache = out / "cache"
    first, second = presets[-1], presets[0]
    quantize(out / "cached-1.gguf", first, "--target-size", str(results["presets"][first]["bytes"]),
             "--target-types", blind, "--target-cache", str(cache), *sens)
    wall, cpu = quantize(out / "cached-2.gguf", second, "--target-size", str(results["presets"][second]["bytes"]),
                         "--target-types", blind, "--target-cache", str(cache), *sens)
    results["timing"]["cached"] = {"preset": second, "wall": wall, "cpu": cpu,
                                   "base_wall": results["presets"][second]["wall"]}
    print(f"second size from the cache ({second}): {wall:.1f} s wall"
          f" ({wall / results['presets'][second]['wall']:.2f}x base)", flush=True)
    save()
    # random mixes: per-tensor types around a random level, predicted loss from the measured errors
    from qf.app.pipeline import make_plan

    if args.random:
        plan, _ = make_plan(args.model, presets[-1], allow_requantize=True, imatrix=imatrix, dry_run=True,
                            target_size=str(results["presets"][presets[-1]]["bytes"]), target_cache=str(cache),
                            target_full_search=True,
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
        quantize(path, presets[-1], "--tensor-type-file", str(rule_file))
        results["random"].append({"model": path.name, "predicted": pred, "bytes": path.stat().st_size})
        random_models.append(path)
    save()
    measured = kld(args.llcpp_python, ref, models, args.chunks, out / "kld.jsonl", args.threads)
    for group in ("presets", "targets"):
        for key in results[group]:
            results[group][key].update(measured[f"{'preset-' if group == 'presets' else ''}{key}.gguf"])
    for name, r in results["curve"].items():
        r.update(measured[name])
    for p, r in results["smaller"].items():
        r.update(measured[f"smaller-{p}.gguf"])
    save()
    if random_models:
        measured_r = kld(args.llcpp_python, ref, random_models, args.random_chunks, out / "kld-random.jsonl",
                         args.threads)
        for r in results["random"]:
            r.update(measured_r[r["model"]])
        results["spearman"] = spearman([r["predicted"] for r in results["random"]],
                                       [r["kld"] for r in results["random"]])
    save()
    report(results, presets, out)


def report(results: dict, presets: list[str], out: Path) -> None:
    floor = results["presets"]["Q8_0"]["kld"]
    T = results["targets"]

    def excess(k: float) -> float:
        return max(k - floor, 1e-9)

    def change(new: float, old: float) -> str:
        return f"{(excess(new) / excess(old) - 1) * 100:+.0f}%"

    print(f"\n{results['model']}: KLD floor (Q8_0) {floor:.5f}; input holds {', '.join(results['held_types'])}")
    print("| preset | bytes | KLD preset | qf | Δ | grid-blind | Δ | preset gradient | blind+gradient | Δ |"
          " grid-blind size at the preset's KLD | grid-blind KLD, smaller file | time qf, blind, blind+gradient / base"
          " (/ the mix from its recipe) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    curve = [(v["bytes"], v["kld"]) for k, v in T.items() if k.startswith("blind-")]
    curve += [(v["bytes"], v["kld"]) for v in results["curve"].values()]
    for p in presets:
        a, q, b = results["presets"][p], T[f"qf-{p}"], T[f"blind-{p}"]
        g, bg = results["presets"].get(f"{p}+gradient"), T.get(f"blind+gradient-{p}")
        size, why = size_at_kld(curve, a["kld"], floor)
        smaller = f"{(size / a['bytes'] - 1) * 100:+.1f}%" if size else why
        gcols = (f"{g['kld']:.5f} | {bg['kld']:.5f} | {change(bg['kld'], a['kld'])}" if g and bg else "- | - | -")
        sm = results.get("smaller", {}).get(p)
        small_col = (f"{sm['kld']:.5f} at {(sm['bytes'] / a['bytes'] - 1) * 100:+.1f}% ({change(sm['kld'], a['kld'])})"
                     if sm and "kld" in sm else "-")
        times = ", ".join(f"{T[k]['wall'] / T[k]['base_wall']:.2f}x"
                          + (f" ({T[k]['wall'] / T[k]['mix_wall']:.2f}x)" if "mix_wall" in T[k] else "")
                          for k in (f"qf-{p}", f"blind-{p}", f"blind+gradient-{p}") if k in T)
        print(f"| {p} | {a['bytes']} | {a['kld']:.5f} ± {a['kld_se']:.5f} | {q['kld']:.5f} |"
              f" {change(q['kld'], a['kld'])} | {b['kld']:.5f} | {change(b['kld'], a['kld'])} | {gcols} |"
              f" {smaller} | {small_col} | {times} |")
    same = [k for k, v in T.items() if not v.get("recipe_same_bytes", True)]
    print("every --save-recipe reproduces its file byte for byte" if not same else f"recipe differs: {same}")
    c = results["timing"].get("cached")
    if c:
        print(f"second size from the measurement cache ({c['preset']}): {c['wall'] / c['base_wall']:.2f}x base")
    if "spearman" in results:
        print(f"Spearman(predicted, measured KLD) over {len(results['random'])} random mixes:"
              f" {results['spearman']:.3f}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    pts = sorted((v["bytes"] / 2**20, v["kld"], k) for k, v in results["presets"].items() if "+" not in k)
    ax.plot([x for x, _, _ in pts], [y for _, y, _ in pts], "o-", label="llama.cpp presets")
    for x, y, k in pts:
        ax.annotate(k, (x, y), fontsize=7)
    for prefix, style in (("qf-", "s-"), ("blind-", "^--"), ("blind+gradient-", "v:")):
        pts = sorted((v["bytes"] / 2**20, v["kld"]) for k, v in T.items() if k.startswith(prefix))
        if prefix == "blind-":
            pts = sorted(pts + [(v["bytes"] / 2**20, v["kld"]) for v in results["curve"].values()])
        if pts:
            ax.plot([x for x, _ in pts], [y for _, y in pts], style, label=f"qf --target-size ({prefix[:-1]})")
    if results["random"]:
        ax.scatter([r["bytes"] / 2**20 for r in results["random"]], [r["kld"] for r in results["random"]],
                   s=10, c="grey", label="random mixes")
    ax.axhline(floor, color="k", lw=0.5, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("file size (MiB)")
    ax.set_ylabel("mean KLD vs F32 (llama.cpp)")
    ax.legend(fontsize=8)
    ax.set_title(f"{results['model']}: size vs KLD", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "size_vs_kld.png", dpi=130)


if __name__ == "__main__":
    main()
