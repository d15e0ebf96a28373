// What Dawn's subgroup matrices reach on this GPU, apart from any staging: the ceiling the tensor-core kernels
// (kernels/matmul-sgmat.ts, kernels/flash-sgmat*.ts) are measured against. On the H200 the matmul kernel with its
// staging removed still ran at 65-83 TFLOP/s (docs/perf.md), against ~790 for cuBLAS: these kernels say whether
// the products themselves, the fragment loads from workgroup memory, or the barriers cost that.
//   node scripts/sgmat-ceiling.mjs [--emulate]        (after `npx tsc`; --emulate: lavapipe smoke test, times mean nothing)
// Kernels (4 subgroups per workgroup unless said, FxF result fragments each, F = 2 (as the matmul kernel's 64x64 tiles) and
// F = 4 (16 independent accumulators per subgroup: whether more products in flight per subgroup raise the rate),
// 4·F² products of 16x16x16 per iteration):
//   regs      fragments loaded once, then only multiply-accumulates;
//   shared    every iteration loads its left and right fragments from workgroup memory first;
//   barrier   as shared, with a workgroup barrier per iteration (as the staged kernels have two per k step);
//   global    as shared, the fragments loaded from storage buffers instead (16 workgroup-sized regions, cached):
//             whether a kernel could skip staging through workgroup memory;
//   barrier-only  as regs, with a workgroup barrier per iteration: the barrier alone;
//   shared-dyn, global-dyn  as shared and global, each iteration's fragment chosen by (it·5 + workgroup) % 4: the
//             compiler cannot keep the four fragments' loads out of the loop (with `it % 4` it may unroll by four
//             and hoist them: session 13's 2x2 shared kernel ran as fast as regs, the 4x4 one 4x slower).
//   roundtrip as regs, and each iteration one result goes through workgroup memory and back as a left operand
//             (stored, a barrier, each lane writes e^x of its elements as f16, a barrier, loaded): the flash kernels'
//             softmax between q·kᵀ and P·v (kernels/flash-direct.ts).
// Then regs, barrier-only, barrier and roundtrip again with one subgroup per workgroup (4x the workgroups, the same
// work): whether a barrier that synchronises one subgroup, as the kernels from storage have (flash-direct.ts,
// matmul-sgmat-direct.ts), escapes what the four-subgroup barrier costs (session 13: 6-14x).
// Timing: GPU timestamps around each of 20 back-to-back passes after 200 ms of warm-up; the median counts.
import { openDevice } from '../dist/runtime/gpu/device.js';
import { sgmatIds, sgmatLanes, sgmatOps, sgmatShape, sgmatSpelling } from '../dist/kernels/sgmat.js';

const emulate = process.argv.includes('--emulate');
const gpu = await openDevice({ profiling: true });
if (emulate && !sgmatShape(gpu.target)) gpu.target = { ...gpu.target, subgroupMatrixConfigs: [{ componentType: 'f16', resultComponentType: 'f32', M: 16, N: 16, K: 16 }] };
const target = gpu.target;
const shape = sgmatShape(target);
if (!shape) {
  console.error(`no subgroup matrices on this device: ${gpu.tensorCoresOff ?? 'the adapter lists no f16 x f16 -> f32 config'}`);
  await gpu.destroy();
  process.exit(1);
}
const ITER = emulate ? 4 : 1024;
// Distinct storage regions the 'global' kernels read (workgroup w reads region w % REGIONS).
const REGIONS = 16;
const GROUPS = emulate ? 2 : 132 * 8;
// Subgroups per workgroup: lavapipe's 32 KiB of workgroup memory also holds the emulation's result slots.
const subgroupsFor = (F) => (emulate ? (F > 2 ? 1 : 2) : 4);
const lanes = sgmatLanes(target);
const { m, n, k } = shape;

function kernel(kind, F, W) {
  const ops = sgmatOps(shape, sgmatSpelling(target), W * F * F);
  const ids = sgmatIds(ops.native, lanes);
  const strideA = 4 * k;
  const strideB = 4 * n;
  const tileA = W * F * m * strideA;
  const tileB = 4 * k * strideB;
  // Fragments from workgroup memory, or (global) from this workgroup's region of the storage buffers.
  const [srcA, srcB, baseA, baseB] = kind.startsWith('global') ? ['src_a', 'src_b', `(wid.x % ${REGIONS}u) * ${tileA}u + `, `(wid.x % ${REGIONS}u) * ${tileB}u + `] : ['tile_a', 'tile_b', '', ''];
  const loads = (it) =>
    [
      ...Array.from({ length: F }, (_, i) => `a_${i} = ${ops.loadLeft(srcA, `${baseA}(sg * ${F * m}u + ${i * m}u) * ${strideA}u + (${it} % 4u) * ${k}u`, `${strideA}u`)};`),
      ...Array.from({ length: F }, (_, j) => `b_${j} = ${ops.loadRight(srcB, `${baseB}(${it} % 4u) * ${k * strideB}u + sg * ${F * n}u % ${strideB}u + ${j * n}u`, `${strideB}u`)};`),
    ].join('\n      ');
  const products = [];
  for (let i = 0; i < F; i++) for (let j = 0; j < F; j++) products.push(`acc_${i}_${j} = ${ops.multiplyAccumulate(`a_${i}`, `b_${j}`, `acc_${i}_${j}`)};`);
  const body = `var<workgroup> tile_a: array<f16, ${tileA}>;
var<workgroup> tile_b: array<f16, ${tileB}>;
var<workgroup> tile_c: array<f32, ${W * m * n}>;
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
${kind.startsWith('global') ? `@group(0) @binding(1) var<storage, read> src_a: array<f16>;\n@group(0) @binding(2) var<storage, read> src_b: array<f16>;\n` : ''}
@compute @workgroup_size(${W * lanes}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32${ids.params}) {
${ids.code}  for (var e = lid; e < ${tileA}u; e += ${W * lanes}u) { tile_a[e] = f16(f32(e % 7u) * 0.125 - 0.375); }
  for (var e = lid; e < ${tileB}u; e += ${W * lanes}u) { tile_b[e] = f16(f32(e % 5u) * 0.125 - 0.25); }
  workgroupBarrier();
${Array.from({ length: F * F }, (_, f) => `  var acc_${Math.floor(f / F)}_${f % F} = ${ops.zero(`sg * ${F * F}u + ${f}u`)};`).join('\n')}
  ${Array.from({ length: F }, (_, i) => `var a_${i}: ${ops.leftType}; var b_${i}: ${ops.rightType};`).join(' ')}
  {
      let it = 0u;
      ${loads('it')}
  }
  for (var it = 0u; it < ${ITER}u; it++) {
      ${kind === 'regs' || kind === 'barrier-only' || kind === 'roundtrip' ? '' : loads(kind.endsWith('-dyn') ? '(it * 5u + wid.x)' : 'it')}
      ${products.join('\n      ')}
      ${kind.startsWith('barrier') ? 'workgroupBarrier();' : ''}${kind === 'roundtrip' ? roundtrip(ops, F, W, strideA) : ''}
  }
${Array.from({ length: F * F }, (_, f) => `  ${ops.store('tile_c', `sg * ${m * n}u`, `acc_${Math.floor(f / F)}_${f % F}`, `${n}u`)}
  workgroupBarrier();
  if (lane == 0u) { out[(wid.x * ${W}u + sg) * ${F * F}u + ${f}u] = tile_c[sg * ${m * n}u]; }
  workgroupBarrier();`).join('\n')}
}`;
  const helpers = ops.helpers();
  return `${ops.directives}\n${helpers ? `${helpers.replace(/unbounded\(([^)]*)\)/g, '$1')}\n` : ''}${body}`;
}

/**
 * WGSL: result acc_0_0 through workgroup memory into left operand a_0, as a flash kernel's scores become P: stored
 * into tile_c, then each lane writes e^x of its elements as f16 over the subgroup's own rows of tile_a, from which
 * a_0 is loaded; a barrier after each write (the emulated spelling's lanes read what others wrote).
 */
function roundtrip(ops, F, W, strideA) {
  const rows = `sg * ${F * m}u`;
  return `
      ${ops.store('tile_c', `sg * ${m * n}u`, 'acc_0_0', `${n}u`)}
      workgroupBarrier();
      for (var e = lane; e < ${m * n}u; e += lanes) { tile_a[(${rows} + e / ${n}u) * ${strideA}u + e % ${n}u] = f16(exp(tile_c[sg * ${m * n}u + e] * 1e-6)); }
      workgroupBarrier();
      a_0 = ${ops.loadLeft('tile_a', `${rows} * ${strideA}u`, `${strideA}u`)};`;
}

const device = gpu.device;
const out = device.createBuffer({ size: GROUPS * 4 * 16 * 4, usage: GPUBufferUsage.STORAGE });
// The 'global' kernels' operands: REGIONS copies of the largest tiles (f16; zeros time as any values do).
const sources = [0, 1].map(() => device.createBuffer({ size: REGIONS * 4 * 4 * 16 * 64 * 2, usage: GPUBufferUsage.STORAGE }));
const results = [];
// [kind, F, subgroups per workgroup]: the four-subgroup kernels, then the one-subgroup ones (n = k: P's [m, n] is a left operand).
const KINDS = ['regs', 'shared', 'barrier', 'global', 'barrier-only', 'shared-dyn', 'global-dyn', ...(n === k ? ['roundtrip'] : [])];
const ONE_SUBGROUP = ['regs', 'barrier-only', 'barrier', ...(n === k ? ['roundtrip'] : [])];
const configs = [...[2, 4].flatMap((f) => KINDS.map((kind) => [kind, f, subgroupsFor(f)])), ...[2, 4].flatMap((f) => ONE_SUBGROUP.map((kind) => [kind, f, 1]))];
for (const [kind, F, W] of configs) {
  // The same work whatever W: as many subgroups in all.
  const groups = emulate ? GROUPS : (GROUPS * subgroupsFor(F)) / W;
  const code = kernel(kind, F, W);
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ code, label: `sgmat ceiling ${kind} ${F}x${F}` });
  if (emulate && F > 2) {
    // The emulation's result slots for 16 fragments overflow lavapipe's workgroup memory: only the WGSL is checked.
    const errors = (await module.getCompilationInfo()).messages.filter((m) => m.type === 'error');
    await device.popErrorScope();
    console.log(`${kind} ${F}x${F}, ${W} subgroup(s): WGSL ${errors.length ? `invalid: ${errors[0].message}` : 'valid'} (not run emulated)`);
    continue;
  }
  const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } }).catch((e) => e);
  const err = await device.popErrorScope();
  if (err || pipeline instanceof Error) {
    console.log(`${kind} ${F}x${F}, ${W} subgroup(s): did not compile: ${err?.message ?? pipeline.message}`);
    continue;
  }
  const entries = [out, ...(kind.startsWith('global') ? sources : [])].map((buffer, binding) => ({ binding, resource: { buffer } }));
  const bind = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
  const encode = (enc, timestamps) => {
    const pass = enc.beginComputePass(timestamps ? { timestampWrites: timestamps } : {});
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bind);
    pass.dispatchWorkgroups(groups);
    pass.end();
  };
  const t0 = performance.now();
  while (performance.now() - t0 < (emulate ? 0 : 200)) {
    const enc = device.createCommandEncoder();
    for (let i = 0; i < 5; i++) encode(enc);
    device.queue.submit([enc.finish()]);
    await device.queue.onSubmittedWorkDone();
  }
  const N = emulate ? 2 : 20;
  const qs = device.createQuerySet({ type: 'timestamp', count: 2 * N });
  const resolve = device.createBuffer({ size: 16 * N, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  const read = device.createBuffer({ size: 16 * N, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const enc = device.createCommandEncoder();
  for (let i = 0; i < N; i++) encode(enc, { querySet: qs, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 });
  enc.resolveQuerySet(qs, 0, 2 * N, resolve, 0);
  enc.copyBufferToBuffer(resolve, 0, read, 0, 16 * N);
  device.queue.submit([enc.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const ts = new BigUint64Array(read.getMappedRange().slice(0));
  read.unmap();
  const ms = Array.from({ length: N }, (_, i) => Number(ts[2 * i + 1] - ts[2 * i]) / 1e6).sort((a, b) => a - b)[Math.floor(N / 2)];
  const flops = groups * W * ITER * F * F * 2 * m * n * k;
  results.push({ kind, fragments: `${F}x${F}`, subgroups: W, ms, tflops: flops / (ms * 1e-3) / 1e12 });
  console.log(`${kind.padEnd(12)} ${F}x${F} ${ms.toFixed(4)} ms  ${(flops / (ms * 1e-3) / 1e12).toFixed(1)} TFLOP/s  (${groups} workgroups x ${W} subgroups x ${ITER} iterations x ${F * F} products of ${m}x${n}x${k})`);
  for (const b of [qs, resolve, read]) b.destroy();
}
console.log(JSON.stringify({ device: gpu.info.description, spelling: target.subgroupMatrixSpelling ?? 'emulated', results }));
await gpu.destroy();
