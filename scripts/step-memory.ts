// The memory plan of one training step under each precision setting, without a device: what f16 storage and a
// frozen fp16 backbone save. Usage: node dist/scripts/step-memory.js PIPELINE [STAGE] [TASK] [BATCH]
// (defaults: the last stage, its first task, the task's batch). The target is WebGPU's portable limits with
// shader-f16 and bindings as large as an H100's, so only the precision settings differ between rows.
import { checkFiles } from '../compiler/check/index.js';
import { schedule } from '../compiler/codegen/schedule.js';
import { PORTABLE_TARGET, type Target } from '../compiler/codegen/types.js';
import { formatBytes, planMemory } from '../compiler/plan/memory.js';
import { trainPlan, type StagePlan, type TaskPlan } from '../compiler/train/plan.js';
import { compileStep } from '../compiler/train/step-graph.js';
import { GPU_RULES } from '../kernels/index.js';

const [file, stageName, taskName, batchText] = process.argv.slice(2);
if (!file) {
  process.stderr.write('usage: node dist/scripts/step-memory.js PIPELINE [STAGE] [TASK] [BATCH]\n');
  process.exit(2);
}
const checked = checkFiles([file]);
if (checked.program.diags.errorCount > 0) {
  process.stderr.write(`${file} has errors: run \`visft check ${file}\`\n`);
  process.exit(1);
}
const plan = trainPlan(checked, checked.roots[0]);
const stage = stageName ? plan.stages.find((s) => s.name === stageName) : plan.stages[plan.stages.length - 1];
if (!stage) throw new Error(`no stage '${stageName}' (stages: ${plan.stages.map((s) => s.name).join(', ')})`);
const task = taskName ? stage.tasks.find((t) => t.name === taskName) : stage.tasks[0];
if (!task) throw new Error(`stage ${stage.name} has no task '${taskName}' (tasks: ${stage.tasks.map((t) => t.name).join(', ')})`);
const batch = batchText ? Number(batchText) : task.batch;

const target: Target = {
  ...PORTABLE_TARGET,
  name: 'portable+shader-f16, H100-sized bindings',
  features: ['shader-f16'],
  limits: { ...PORTABLE_TARGET.limits, maxStorageBufferBindingSize: 2 ** 31 - 4, maxBufferSize: 2 ** 40 },
};

const rows: [string, StagePlan, TaskPlan, boolean][] = [
  ['fp32 stage, fp32 backbone', { ...stage, precision: 'fp32' }, { ...task, backbonePrecision: 'fp32' }, false],
  [`${stage.precision} stage, f32 storage`, stage, { ...task, backbonePrecision: 'fp32' }, false],
  [`${stage.precision} stage, f16 storage`, stage, { ...task, backbonePrecision: 'fp32' }, true],
  [`${stage.precision} stage, fp16 backbone, f16 storage`, stage, { ...task, backbonePrecision: 'fp16' }, true],
];
console.log(`${file} ${stage.name}/${task.name}, batch ${batch}, gradient checkpointing ${stage.gradientCheckpointing ? 'on' : 'off'}, target ${target.name}`);
for (const [what, s, t, halfStorage] of rows) {
  const step = compileStep(checked, checked.roots[0], s, { ...t, batch });
  const sched = schedule(step.graph, target, GPU_RULES, { halfStorage });
  const p = planMemory({ values: sched.values, schedule: sched.kernels, aliases: sched.aliases }, target);
  const role = (r: string) => formatBytes(p.arenas.filter((a) => a.role === r).reduce((n, a) => n + a.size, 0));
  console.log(`  ${what}: peak ${formatBytes(p.peakBytes)} (parameters ${role('param')}, data ${role('io')}, temporaries ${role('temp')}), ${sched.kernels.length} kernels`);
}
