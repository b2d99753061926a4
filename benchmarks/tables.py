"""README's benchmark tables, generated from the benchmarks' committed outputs under docs/benchmarks/ (so no number in
README.md is typed by hand).

    python benchmarks/tables.py              # print every table (markdown)
    python benchmarks/tables.py --check README.md   # exit 1 unless README.md holds each table exactly

tests/test_report.py runs the check.
"""

import argparse
import json
import os
import sys

from rethink_tf import console  # noqa: E402  (first: no TensorFlow log lines)

console.quiet()

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "benchmarks")


def _rows(name):
    with open(os.path.join(DOCS, f"{name}.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def provenance(name):
    """The first line of an output: where, when and what made it."""
    h = _rows(name)[0]
    return f"{h['date']}, commit {h['commit']}, TF {h['tensorflow']}, {h['machine']['cpus']} cores"


def train_throughput():
    rows = [r for r in _rows("train_throughput") if r.get("benchmark") == "train_throughput"]
    from rethink_tf.models import XLA_DEFAULTS, jit_scope_default

    out = ["| model | the CLI's default (XLA, input path) | the other input path | the other XLA setting | "
           "synthetic batch (default XLA) |", "|---|---|---|---|---|"]

    def path(device_data):
        return "`--device_data`" if device_data else "tf.data"

    for model in dict.fromkeys(r["model"] for r in rows):
        xla = XLA_DEFAULTS["cpu"].get(model, False)

        def device(jit):  # one device, no augmentation: --device_data's default (loop.device_data_default)
            return jit and jit_scope_default(model, "cpu") == "call"

        pick = {(r["data"], r["jit_compile"], r["device_data"]): r for r in rows if r["model"] == model}
        default, other_path = pick[("pipeline", xla, device(xla))], pick[("pipeline", xla, not device(xla))]
        other_xla = pick[("pipeline", not xla, device(not xla))]

        def xla_text(r):
            return f"XLA {'per ' + r['jit_scope'] if r['jit_scope'] else 'off'}"

        cells = [f"{r['images_per_s']:,.0f} ({xla_text(r)}, {path(r['device_data'])})"
                 for r in (default, other_path, other_xla)]
        out.append(f"| {model} | **{cells[0].replace(' (', '** (', 1)} | {cells[1]} | {cells[2]} | "
                   f"{pick[('synthetic', xla, False)]['images_per_s']:,.0f} |")
    return "\n".join(out)


def vs_pytorch():
    rows = _rows("vs_pytorch")
    peak = next(r for r in rows if r.get("benchmark") == "gemm_peak")
    out = [f"| model | package images/s | PyTorch {next(r['torch'] for r in rows if 'torch' in r)} images/s | "
           "package / PyTorch | package GFLOP/s (train) | of the GEMM peak |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("benchmark") == "vs_pytorch":
            out.append(f"| {r['model']} | **{r['images_per_s']:,.0f}** | {r['pytorch_images_per_s']:,.0f} | "
                       f"**{r['ratio']:.2f}×** | {r['gflops']:.0f} | {100 * r['fraction_of_gemm_peak']:.0f}% |")
    out.append(f"| float32 GEMM peak (2048², all cores) | | | | TF {peak['tensorflow_gflops']:.0f}, "
               f"torch {peak['torch_gflops']:.0f} | |")
    return "\n".join(out)


def step_overhead():
    rows = [r for r in _rows("step_overhead") if r.get("benchmark") == "step_overhead"]
    out = ["| strategy | steps per call | default input path | package ms/step | bare loop ms/step | ratio | bare loop "
           "with metrics ms/step | ratio to it | bare loop, shuffled ms/step | ratio to it | `--nodevice_data` "
           "ms/step | `--device_data` ms/step |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['strategy']} | {r['steps_per_call']} | {r['default_path'].replace('_', ' ')} | "
                   f"{r['package_ms_per_step']:.2f} | {r['bare_ms_per_step']:.2f} | {r['ratio']:.2f}× | "
                   f"{r['bare_with_metrics_ms_per_step']:.2f} | {r['ratio_to_bare_with_metrics']:.2f}× | "
                   f"{r['bare_shuffled_ms_per_step']:.2f} | {r['ratio_to_bare_shuffled']:.2f}× | "
                   f"{r['package_tf_data_ms_per_step']:.2f} | {r['package_device_data_ms_per_step']:.2f} |")
    return "\n".join(out)


def step_overhead_prime_epoch():
    (r,) = [r for r in _rows("step_overhead_prime_epoch") if r.get("benchmark") == "step_overhead_prime_epoch"]
    loop = "`strategy.run` loop" if r["default_loop"] == "strategy_run" else "Keras' `fit`"
    return "\n".join([
        f"| one device, {r['steps_per_epoch']} steps per epoch (prime) | steps per call | ms/step | ratio |",
        "|---|---|---|---|",
        f"| package default ({loop}) | {r['default_steps_per_call']} | **{r['default_ms_per_step']:.2f}** | |",
        f"| Keras' `fit` (its calls divide the epoch) | {r['fit_steps_per_call']} | {r['fit_ms_per_step']:.2f} | "
        f"{r['fit_over_default']:.2f}× the default |",
        f"| bare loop | 32 | {r['bare_32_ms_per_step']:.2f} | default {r['default_over_bare_32']:.2f}× it |",
        f"| bare loop | 1 | {r['bare_1_ms_per_step']:.2f} | |"])


def step_overhead_xla():
    rows = [r for r in _rows("step_overhead_xla") if r.get("benchmark") == "step_overhead_xla"]
    out = ["| one device, `--jit_compile` | steps per call | package ms/step | bare loop ms/step | "
           "ratio | bare loop, shuffled ms/step | bare loop under XLA ms/step | ratio to it |",
           "|---|---|---|---|---|---|---|---|"]
    scope = {"call": "XLA compiles each call", "step": "XLA compiles each step"}
    for r in rows:
        out.append(f"| tiny model, {'`--device_data`' if r['package_device_data'] else 'tf.data'}, "
                   f"{scope[r['package_jit_scope']]} | {r['steps_per_call']} | {r['package_ms_per_step']:.3f} | "
                   f"{r['bare_ms_per_step']:.3f} | **{r['ratio']:.2f}×** | {r['bare_shuffled_ms_per_step']:.3f} | "
                   f"{r['bare_xla_ms_per_step']:.3f} | {r['ratio_to_bare_xla']:.2f}× |")
    return "\n".join(out)


def train_throughput_jit_scope():
    rows = [r for r in _rows("train_throughput_jit_scope") if r.get("benchmark") == "train_throughput"]
    out = ["| model, XLA on, `--device_data` | XLA compiles each step | XLA compiles each call (k steps) | "
           "call / step |",
           "|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in rows):
        pick = {r["jit_scope"]: r for r in rows if r["model"] == model}
        step, call = pick["step"], pick["call"]
        out.append(f"| {model} ({step['steps_per_execution']} steps per call) | {step['images_per_s']:,.0f} images/s | "
                   f"{call['images_per_s']:,.0f} images/s | **{call['images_per_s'] / step['images_per_s']:.2f}×** |")
    return "\n".join(out)


def batchnorm():
    rows = _rows("batchnorm")
    out = ["| BatchNorm in training mode (forward + backward) | fused kernel | Keras 3's ops | speedup |",
           "|---|---|---|---|"]
    for r in rows:
        if r.get("benchmark") == "batchnorm_layer":
            out.append(f"| one layer, input {'×'.join(str(d) for d in r['shape'])} | {r['fused_ms']:.1f} ms | "
                       f"{r['keras_ms']:.1f} ms | {r['speedup']:.2f}× |")
    m = next(r for r in rows if r.get("benchmark") == "batchnorm_model")
    out.append(f"| {m['model']}'s training step ({m['batchnorm_layers']} layers, batch {m['batch']}) | "
               f"**{m['fused_images_per_s']:,.0f} images/s** | {m['keras_images_per_s']:,.0f} images/s | "
               f"**{m['speedup']:.2f}×** |")
    return "\n".join(out)


def pipeline():
    rows = _rows("pipeline")
    by = {(r.get("corrupt"), r.get("augmentation")): r for r in rows if "steady_images_per_s" in r}
    summary = next(r for r in rows if r.get("summary") == "pipeline")
    worst = min((r for r in by.values() if r["augmentation"] == "none" and not r["corrupt"].startswith("none")),
                key=lambda r: r["steady_ratio_to_clean"])
    clean, crop_aug = by[("none", "none")]["steady_images_per_s"], by[("none", "augment+random_crop")]["steady_images_per_s"]
    met = lambda ok: "met" if ok else "**not met** on this machine"  # noqa: E731
    return "\n".join([
        "| pipeline (50,000 CIFAR-shaped images) | images/s | target |", "|---|---|---|",
        f"| clean | **{clean:,.0f}** | ≥ 200,000 ({met(clean >= 200_000)}) |",
        f"| random crop | **{by[('none', 'random_crop')]['steady_images_per_s']:,.0f}** | |",
        f"| random crop + flip + rotation ±25° (Table 4) | **{crop_aug:,.0f}** | ≥ 100,000 ({met(crop_aug >= 100_000)}) |",
        f"| flip + rotation, no crop | {by[('none', 'augment')]['steady_images_per_s']:,.0f} | |",
        f"| corrupted pipelines, worst steady ratio to clean | {summary['worst_corruption_steady_ratio']:.3f} "
        f"({worst['corrupt'].replace('_', ' ')}) | ≥ 0.95 ({met(summary['worst_corruption_steady_ratio'] >= 0.95)}) |"]
        + ([f"| the clean pipeline built again, ratio to its first build (the noise floor) | "
            f"{summary['clean_rebuilt_ratio']:.3f} | |"] if "clean_rebuilt_ratio" in summary else []))


TABLES = {"train_throughput": train_throughput, "vs_pytorch": vs_pytorch, "step_overhead": step_overhead,
          "step_overhead_prime_epoch": step_overhead_prime_epoch, "step_overhead_xla": step_overhead_xla,
          "train_throughput_jit_scope": train_throughput_jit_scope,
          "batchnorm": batchnorm, "pipeline": pipeline}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", metavar="README", help="exit 1 unless this file holds every table exactly")
    args = ap.parse_args()
    if args.check:
        with open(args.check, encoding="utf-8") as f:
            text = f.read()
        missing = [name for name, table in TABLES.items() if table() not in text]
        if missing:
            print(f"{args.check} lacks the current table(s) of {', '.join(missing)}: paste "
                  "`python benchmarks/tables.py`'s output", file=sys.stderr)
            return 1
        return 0
    for name, table in TABLES.items():
        print(f"<!-- {name}: docs/benchmarks/{name}.jsonl ({provenance(name)}) -->\n{table()}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
