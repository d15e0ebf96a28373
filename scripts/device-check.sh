#!/usr/bin/env bash
# The checks only a real GPU can make, as one short script for a lent NVIDIA machine (docs/perf.md records what
# it printed). On this machine first: `npm ci && npx tsc -p tsconfig.json && ../shared/device/prepare.sh dist`;
# then the device tool with carry [".gpu"] and the command
#   source .gpu/enter.sh && export PATH=/tmp/gpu-node:$PATH && bash scripts/device-check.sh
# Everything goes to $OUT (the device tool brings it back); each step has its own time limit so one hang does not
# lose the rest. Steps: the adapter (doctor), the kernels whose native form lavapipe cannot run (subgroup-matrix
# matmul, flash attention with 32-wide subgroups) against their references, then the bench rows with tfjs-webgpu
# on the same device and, where torch is installed, PyTorch's times for the same shapes.
set -u
OUT=${OUT:-/tmp/visft-device-check}
mkdir -p "$OUT"
step() { # name, seconds, command...
  local name=$1 secs=$2
  shift 2
  local t0=$SECONDS
  timeout "$secs" "$@" >"$OUT/$name.txt" 2>&1
  echo "$name: exit $? in $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
}
step doctor 60 node bin/visft.js doctor
step sgmat-test 180 node --test --test-reporter=spec dist/test/kernels/matmul-sgmat.test.js dist/test/kernels/flash-sgmat*.test.js
# Dawn's own subgroup-matrix tests enable the Vulkan memory model: if the native kernels fail above, try with it.
grep -q '^ℹ fail 0' "$OUT/sgmat-test.txt" || VISFT_DAWN_TOGGLES=use_vulkan_memory_model step sgmat-test-vkmm 180 node --test --test-reporter=spec dist/test/kernels/matmul-sgmat.test.js dist/test/kernels/flash-sgmat*.test.js
step flash-test 150 node --test --test-reporter=spec dist/test/kernels/flash-attention.test.js
step bench-matmul 150 node bin/visft.js bench --json --rows matmul_f16,matmul_f32
step bench-rows 90 node bin/visft.js bench --json --rows layernorm,softmax,gelu
step bench-attention 120 node bin/visft.js bench --json --rows attention,msdeform
if python3 -c 'import torch' 2>/dev/null; then
  step torch-peer 90 python3 runtime/bench/torch_peer.py
fi
tail -n 3 "$OUT"/*.txt >"$OUT/tails.txt" 2>&1
cat "$OUT/summary.txt"
