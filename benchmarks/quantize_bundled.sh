#!/usr/bin/env bash
# INT8 accuracy on the bundled CIFAR-10 subset: SE-ResNet-20 and its plain twin ResNet-20, each trained
# with the bundled recipe (25 epochs, ~10 min each on 2 CPU threads), then quantized with every SE gate
# policy; top-1 before/after and latency at batch 8 are printed by `senet quantize` (docs/deploy.md).
#
#     bash benchmarks/quantize_bundled.sh [RUNS_DIR]      # default runs/quantize
set -euo pipefail
runs="${1:-runs/quantize}"
for model in se_resnet20 resnet20; do
    if [ ! -f "$runs/$model/checkpoints/last.safetensors" ]; then
        senet train --model "$model" --seed 0 --threads 2 --out "$runs/$model"
    fi
done
for model in se_resnet20 resnet20; do
    echo "== $model, gate policy float (the default)"
    senet quantize "$runs/$model" --calibration-images 512 --batch-size 8
done
for gate in int8 hard_sigmoid; do
    echo "== se_resnet20, gate policy $gate"
    senet quantize "$runs/se_resnet20" --gate "$gate" --calibration-images 512 --batch-size 8
done
