"""How much does `senet train`'s result depend on the CPU thread count and instruction set?

Runs the bundled recipe (`senet train --set epochs=E`) once per setting, each in its own process,
and prints every epoch's metrics side by side, then whether each run is bit-identical to the first.
A setting is a thread count (`--threads`, torch's intra-op threads) and, optionally, the kernels'
instruction set (`--isa`, exported as ATEN_CPU_CAPABILITY: default, avx2, avx512 where the CPU has it).
`--repeat` runs the first setting twice, to show that a fixed setting is bit-reproducible.

    python benchmarks/thread_spread.py --threads 1,2,4 --epochs 2 --repeat
    python benchmarks/thread_spread.py --threads 2 --isa avx2,default --epochs 2
    python benchmarks/thread_spread.py --threads 1,2 --epochs 25      # the full default run (slow)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

KEYS = ("train_loss", "val_loss", "top1_err", "top5_err")


def run(threads: int, isa: str | None, epochs: int, out: Path, extra: list[str]) -> list[dict]:
    env = dict(os.environ)
    if isa:
        env["ATEN_CPU_CAPABILITY"] = isa
    cmd = [sys.executable, "-m", "senet.cli", "train", "--threads", str(threads), "--set", f"epochs={epochs}",
           "--out", str(out), "--device", "cpu", *extra]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    env_json = json.loads((out / "env.json").read_text())
    print(f"  threads {env_json['torch_threads']}, {env_json['cpu_capability']}: done", file=sys.stderr)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2,4", help="comma-separated thread counts")
    ap.add_argument("--isa", default="", help="comma-separated ATEN_CPU_CAPABILITY values (default: the CPU's best)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeat", action="store_true", help="run the first setting a second time")
    ap.add_argument("--set", dest="extra", action="append", default=[], help="more senet train --set overrides")
    args = ap.parse_args()
    settings = [(int(t), isa or None) for t in args.threads.split(",") for isa in (args.isa.split(",") or [""])]
    if args.repeat:
        settings.append(settings[0])
    extra = [x for kv in args.extra for x in ("--set", kv)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (threads, isa) in enumerate(settings):
            results.append(((threads, isa), run(threads, isa, args.epochs, Path(tmp) / f"run{i}", extra)))
    print(f"senet train --set epochs={args.epochs} {' '.join(extra)}".rstrip())
    print("per epoch: train loss / val loss / top-1 err % / top-5 err %")
    for (threads, isa), hist in results:
        cells = "   ".join(f"{h['train_loss']:.4f} {h['val_loss']:.4f} {h['top1_err']:.2f} {h['top5_err']:.2f}"
                           for h in hist)
        same = all(h[k] == r[k] for h, r in zip(hist, results[0][1]) for k in KEYS)
        print(f"threads {threads} {isa or 'best ISA':>8}: {cells}   bit-identical to the first: {same}")
    finals = [hist[-1]["top1_err"] for _, hist in results[:len(results) - args.repeat]]  # distinct settings
    if len(finals) > 1:
        print(f"final top-1 error: min {min(finals):.2f}, max {max(finals):.2f}, "
              f"spread {max(finals) - min(finals):.2f} points, std {statistics.stdev(finals):.2f}")


if __name__ == "__main__":
    main()
