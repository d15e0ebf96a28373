#!/usr/bin/env bash
# The checks only a real GPU can make, as one short script for a lent NVIDIA machine (docs/perf.md records what
# it printed). On this machine first: `npm ci && npx tsc -p tsconfig.json && ../shared/device/prepare.sh dist`;
# then the device tool with carry [".gpu"] and the command
#   source .gpu/enter.sh && export PATH=/tmp/gpu-node:$PATH && bash scripts/device-check.sh
# Each step has its own time limit, and all of them together stay under BUDGET seconds (default 420), so one hang
# does not lose the rest and the lease is not overrun. Steps, most valuable first: the adapter (doctor); the
# kernels whose native form lavapipe cannot run (subgroup-matrix matmul and flash attention) against their
# references; Dawn's robustness transform on and off (the default programs, the tensor-core ceilings of
# scripts/sgmat-ceiling.mjs); the tile and staging sweep (scripts/tune-sgmat.mjs); PyTorch's times for the bench
# shapes; the bench rows with tfjs-webgpu on the same device (and again with robustness off); the
# whole test suite on this GPU; last every primitive op against PyTorch (scripts/oracle-fuzz.py, fp16 then f32; model-sized
# cases with the candidates forced on and under the profile).
# `visft tune` (tune-profile) measures the kernels' equivalent forms and Dawn's robustness toggles on this GPU and
# writes the tuning profile (/tmp/visft-tuning/profile.json, kept on the machine while it stays warm, so a second
# call's bench-tuned finds it; copied to $OUT) that bench-tuned then applies; every other step runs without a
# profile (VISFT_TUNING=none), so its numbers are the defaults'.
# STEPS="doctor sgmat-test ..." runs only the steps named;
# TUNE_ARGS and TORCH_ARGS pass options to the sweep and the PyTorch peer (e.g. TUNE_ARGS="--rows
# matmul_f32_evag_fc2"), TUNE_GROUPS and TUNE_ROWS narrow visft tune, TUNE_FROM=auto starts it from the shipped profile; SGMAT_TESTS and BENCH_TUNED_ROWS
# replace sgmat-test's files and bench-tuned's rows. The logs go to $OUT/logs.tgz, rebuilt after every step (the device tool brings back at
# most 8 files), with a summary beside it.
# GPU clocks, power and throttle reasons are sampled twice a second throughout (clocks.csv in the archive): the
# H200 stayed at its idle clock through short bursts of Dawn work (docs/perf.md).
set -u
OUT=${OUT:-/tmp/visft-device-check}
BUDGET=${BUDGET:-420}
LOGS=/tmp/visft-logs
mkdir -p "$OUT" "$LOGS"
export VISFT_TUNING=none
PROFILE=/tmp/visft-tuning/profile.json
step() { # name, seconds, command...
  local name=$1 secs=$2 left=$((BUDGET - SECONDS))
  shift 2
  [[ -z "${STEPS:-}" || " $STEPS " == *" $name "* ]] || return 0
  ((left < 15)) && { echo "$name: skipped, budget spent" | tee -a "$OUT/summary.txt"; return; }
  ((secs > left)) && secs=$left
  local t0=$SECONDS
  timeout "$secs" "$@" >"$LOGS/$name.txt" 2>&1
  echo "$name: exit $? in $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
  tar -czf "$OUT/logs.tgz" -C "$LOGS" .
}
nvidia-smi -L >"$OUT/summary.txt" 2>&1
python3 -c 'import torch, numpy; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' >>"$OUT/summary.txt" 2>&1 || echo "no torch and numpy: the PyTorch steps are skipped" >>"$OUT/summary.txt"
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,utilization.gpu,clocks_throttle_reasons.active --format=csv -lms 500 >"$LOGS/clocks.csv" 2>&1 &
step doctor 30 node bin/visft.js doctor
SGMAT_TESTS=${SGMAT_TESTS:-"dist/test/kernels/matmul-sgmat.test.js dist/test/kernels/matmul-sgmat-direct.test.js dist/test/kernels/matmul-split16.test.js dist/test/kernels/flash-split16.test.js dist/test/kernels/flash-split16-backward.test.js dist/test/kernels/flash-direct.test.js dist/test/kernels/flash-direct-backward.test.js dist/test/kernels/flash-direct-views.test.js dist/test/kernels/matmul-vector-loads.test.js dist/test/kernels/matmul-split-across.test.js dist/test/codegen/msdeform-schedule.test.js dist/test/kernels/flash-sgmat.test.js dist/test/kernels/flash-sgmat-backward.test.js dist/test/gpu/run-cli.test.js dist/test/gpu/eva-variants.test.js dist/test/kernels/msdeform-split.test.js dist/test/kernels/msdeform-lanes.test.js dist/test/codegen/attention-f16-reads.test.js dist/test/kernels/matmul-block.test.js dist/test/kernels/flash-unroll.test.js dist/test/kernels/flash-blocked.test.js dist/test/kernels/flash-blocked-backward.test.js dist/test/kernels/flash-blocked-views.test.js dist/test/kernels/flash-sweep-split.test.js dist/test/kernels/flash-share-exp.test.js"}
step sgmat-test 90 node --test --test-reporter=spec $SGMAT_TESTS
TUNE_PROFILE_SECS=${TUNE_PROFILE_SECS:-240}
step tune-profile "$TUNE_PROFILE_SECS" node bin/visft.js tune ${TUNE_GROUPS:+--groups "$TUNE_GROUPS"} ${TUNE_ROWS:+--rows "$TUNE_ROWS"} ${TUNE_FROM:+--from "$TUNE_FROM"} --seconds $((TUNE_PROFILE_SECS - 30)) --out "$PROFILE"
EVA_STEP='test -f /tmp/visft-eva-g-step.visftx || node bin/visft.js compile pipelines/visft_eva_g.visft --entry eva --stage stage2 --vjp --precision fp16 --shape image=1x3x224x224 -o /tmp/visft-eva-g-step.visftx'
STEP_TUNING='$(test -f /tmp/visft-tuning/profile.json && echo /tmp/visft-tuning/profile.json || echo auto)'
# Dawn's robustness transform clamps every array index in our shaders and wraps every subgroup-matrix load and
# store whose offset is not constant in an if, through a function-scope variable (Tint's core.Robustness with
# predicate_subgroup_matrix): every measurement up to session 10 ran with it. First the default programs on a
# second device with it off against the first, then the tensor-core ceilings both ways.
ROBUST_ROWS=matmul_f16_evae_fc1,matmul_f16_evag_qkv,attention_fwd_evag_detection,attention_vjp_evag_detection,matmul_f32_evag_qkv,attention_vjp_f16_evag_detection,msdeform_vjp_m2f_3lvl
step tune-robustness 90 node scripts/tune-sgmat.mjs --json "$LOGS/tune-robustness.json" --rows "${ROBUST_ROWS}" --variants robust
step sgmat-ceiling 30 node scripts/sgmat-ceiling.mjs
step sgmat-ceiling-norobust 30 env VISFT_DAWN_TOGGLES=disable_robustness node scripts/sgmat-ceiling.mjs
step tune-sgmat "${TUNE_SECS:-150}" node scripts/tune-sgmat.mjs --json "$LOGS/tune.json" ${TUNE_ARGS:-}
python3 -c 'import torch' 2>/dev/null && step torch-peer 60 python3 runtime/bench/torch_peer.py ${TORCH_ARGS:-}
step bench-matmul 60 node bin/visft.js bench --json --rows matmul_f16,matmul_f32
step bench-rows 30 node bin/visft.js bench --json --rows layernorm,softmax,gelu
step bench-attention 130 node bin/visft.js bench --json --repeat 10 --rows attention,msdeform
# The bench rows again with robustness off (absolute times against the steps above: same lease, warm clocks).
step bench-norobust 120 env VISFT_DAWN_TOGGLES=disable_robustness node bin/visft.js bench --json --repeat 10 --rows matmul_f16,matmul_f32,attention_fwd,attention_vjp_evag,attention_vjp_f16
# The bench rows under the profile tune-profile wrote (the untuned times are the steps above, same lease).
[[ -f "$PROFILE" ]] && step bench-tuned 150 env VISFT_TUNING="$PROFILE" node bin/visft.js bench --json --repeat 10 --rows "${BENCH_TUNED_ROWS:-matmul_f16,matmul_f32,attention_fwd,attention_vjp_evag,attention_vjp_f16,msdeform}"
# The candidates of sessions 14 and 15 forced on (visft bench --set), whatever the tuner adopted: their absolute times
# beside tfjs and beside the default kernels (vsUntuned), for the rows of the goals they aim at.
CANDIDATES='{"sgmatDirect": true, "f32TensorCores": true, "flashDirect": true, "flashDirectGrad": true, "f32AttentionTensorCores": true, "f32AttentionGradTensorCores": true}'
# In two steps, the f16 goals' rows first, so a slow row costs only its own step's.
step bench-candidates 120 bash -c "node bin/visft.js bench --json --repeat 10 --rows matmul_f16,attention_fwd_f16_evag,attention_vjp_f16_evag --tuning $STEP_TUNING --set '$CANDIDATES'"
step bench-candidates-f32 120 bash -c "node bin/visft.js bench --json --repeat 10 --rows matmul_f32,attention_fwd_evag,attention_vjp_evag --tuning $STEP_TUNING --set '$CANDIDATES'"
# Where EVA-G's stage-2 fp16 training step (forward and the LoRA gradients, one 224x224 image, compiled here, seeded
# weights) spends its time on this GPU, kernel by kernel, under the profile that applies (tune-profile's when it
# wrote one, else the shipped one where the driver matches): what to work on next. profile-model-direct: the same
# with the tensor-core kernels that load from storage forced on (visft profile --set), whatever the tuner adopted.
# tune-model: visft tune on that step as a whole (its profile comes back beside the other, applied by no later step).
# After the bench rows since session 17: the goals' numbers come first when the budget runs short.
step profile-model 90 bash -c "$EVA_STEP && node bin/visft.js profile /tmp/visft-eva-g-step.visftx --tuning $STEP_TUNING --repeat 3 --top 20"
step profile-model-direct 90 bash -c "$EVA_STEP && node bin/visft.js profile /tmp/visft-eva-g-step.visftx --tuning $STEP_TUNING --set '{\"sgmatDirect\": true, \"flashDirect\": true, \"flashDirectGrad\": true}' --repeat 3 --top 20"
step tune-model 200 bash -c 'node bin/visft.js compile pipelines/visft_eva_g.visft --entry eva --stage stage2 --vjp --precision fp16 --shape image=1x3x224x224 -o /tmp/visft-eva-g-step.visftx && node bin/visft.js tune /tmp/visft-eva-g-step.visftx --seconds 150 --groups "dawn robustness,matmul K split target,f32 flash attention forward,f16 attention on tensor cores,f16 matmul from storage,f16 matmul tensor-core tiles" --out /tmp/visft-tuning/eva-g-step.json'
# How many workgroups of the f32 flash kernels and the matmuls run at once (their times over growing grids), under the
# profile that applies: whether a last wave runs nearly empty (the sweep split's premise) and what the splits should
# aim at. After the bench, so that a short budget cuts this first.
step waves 60 bash -c "VISFT_TUNING=$STEP_TUNING node scripts/waves.mjs --json $LOGS/waves.json"
step all-tests 90 node --test --test-reporter=dot $(find dist/test -name '*.test.js' | sort)
# Every primitive op through the CLI on this GPU against PyTorch float64: first under fp16 autocast (the f16 matmul
# operands go to the tensor-core kernels; ~3 cases per op autocast rounds), then in f32 (3 random cases per op, ~2 min).
python3 -c 'import torch, numpy' 2>/dev/null && step oracle-fuzz-fp16 60 python3 scripts/oracle-fuzz.py --precision fp16 --cases 30 --seed 7 -v
# The same ops under the profile tune-profile wrote (its toggles and kernel choices: the tuner checked only its rows).
[[ -f "$PROFILE" ]] && python3 -c 'import torch, numpy' 2>/dev/null && step oracle-fuzz-tuned 90 env VISFT_TUNING="$PROFILE" python3 scripts/oracle-fuzz.py --cases 60 --seed 9 -v
# Model-sized cases (several tiles; EVA's widths and head dims; the pixel decoder) against PyTorch: the candidates of
# sessions 14-16 forced on (f32, then fp16 autocast), then under the profile that applies.
MODEL_OPS=matmul_model,attention_model,msdeform_model
python3 -c 'import torch, numpy' 2>/dev/null && step oracle-fuzz-candidates 120 bash -c "python3 scripts/oracle-fuzz.py --ops $MODEL_OPS --cases 12 --seed 12 --set '$CANDIDATES' -v; f32=\$?; python3 scripts/oracle-fuzz.py --precision fp16 --ops $MODEL_OPS --cases 12 --seed 13 --set '$CANDIDATES' -v && exit \$f32"
python3 -c 'import torch, numpy' 2>/dev/null && step oracle-fuzz-model 90 bash -c "VISFT_TUNING=$STEP_TUNING python3 scripts/oracle-fuzz.py --ops $MODEL_OPS --cases 18 --seed 11 -v"
python3 -c 'import torch, numpy' 2>/dev/null && step oracle-fuzz 150 python3 scripts/oracle-fuzz.py --cases 147 --seed 7 -v
kill %1 2>/dev/null
[[ -f "$PROFILE" ]] && cp "$PROFILE" "$LOGS/tuning-profile.json" && cp "$PROFILE" "$OUT/tuning-profile.json"
[[ -f /tmp/visft-tuning/eva-g-step.json ]] && cp /tmp/visft-tuning/eva-g-step.json "$LOGS/" && cp /tmp/visft-tuning/eva-g-step.json "$OUT/"
tar -czf "$OUT/logs.tgz" -C "$LOGS" .
cat "$OUT/summary.txt"
