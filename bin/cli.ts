// The `visft` command line. Exit codes: 0 clean, 1 problems found (diagnostics printed), 2 usage errors.
// Every failure is a message, never a stack trace; files are only ever replaced atomically.
// Commands are imported when they run, so `visft check` never loads the GPU runtime.
import { Command, CommanderError, Option } from 'commander';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { UsageError } from './commands/errors.js';
import { TuningProfileError } from '../runtime/tune/profile.js';

// Options several commands share, described once.
const TUNING_HELP = 'auto (the tuning profile measured on this adapter, if any: `visft tune`), none, or a profile file';
const SET_HELP = 'kernel choices over the tuning profile\'s, as JSON (e.g. \'{"flashDirect": true}\'; `visft tune --list` names them)';
const KERNELS_HELP = "auto (the bundle's kernels when compiled for a GPU target this adapter satisfies, else scheduled for this adapter), bundle, or device";

const pkg = JSON.parse(readFileSync(fileURLToPath(new URL('../../package.json', import.meta.url)), 'utf8')) as { version: string };


function program(): Command {
  const cmd = new Command('visft')
    .description('Declarative, checked ViSFT fine-tuning of vision foundation models on any WebGPU GPU')
    .version(pkg.version)
    .showSuggestionAfterError(true)
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  cmd
    .command('check')
    .description('parse and check .visft files and everything they import; print every problem')
    .argument('<files...>', '.visft files')
    .option('--json', 'print diagnostics as JSON')
    .action(async (files: string[], opts: { json?: boolean }) => {
      process.exitCode = (await import('./commands/check.js')).runCheck(files, opts);
    });

  cmd
    .command('fmt')
    .description('print .visft files in canonical layout (comments kept)')
    .argument('<files...>', '.visft files')
    .addOption(new Option('--check', 'list files that are not formatted; exit 1 if any').conflicts('write'))
    .option('--write', 'rewrite files in place (atomically)')
    .action(async (files: string[], opts: { check?: boolean; write?: boolean }) => {
      process.exitCode = (await import('./commands/fmt.js')).runFmt(files, opts);
    });

  cmd
    .command('parse')
    .description('print the front end\'s intermediate forms of a file as JSON: tokens, CST or AST')
    .argument('<file>', 'a .visft file')
    .addOption(new Option('--emit <form>', 'what to print').choices(['tokens', 'cst', 'ast']).default('ast'))
    .action(async (file: string, opts: { emit: string }) => {
      process.exitCode = (await import('./commands/parse.js')).runParse(file, opts);
    });

  cmd
    .command('resolve')
    .description('check a pipeline and print what it resolves to: backbones, parameters, LoRA targets, stages')
    .argument('<file>', 'a pipeline .visft file')
    .option('--json', 'print JSON')
    .action(async (file: string, opts: { json?: boolean }) => {
      process.exitCode = (await import('./commands/resolve.js')).runResolve(file, opts);
    });

  cmd
    .command('compile')
    .description('lower a pipeline entry (or one primitive op) to a typed graph and write an executable bundle')
    .argument('[file]', 'a pipeline .visft file')
    .option('--entry <name>', 'a backbone, head or module of the file')
    .option('--op <name>', 'compile one primitive op instead')
    .option('--stage <name>', 'apply the stage\'s LoRA and take its trainable parameters')
    .option('--vjp', 'also compute gradients: takes d:<output>, returns d:<param> (d:<input> for --op)')
    .option('--precision <p>', 'fp32 (default), or fp16 / bf16 mixed precision as a training step applies it (matmul and attention operands rounded before the VJP)')
    .option('--shape <spec...>', 'input shapes, NAME=AxBxC', [])
    .option('--attr <spec...>', 'op attributes for --op, KEY=VALUE', [])
    .option('--emit <form>', 'print an intermediate form: ir, kernels, wgsl or plan')
    .option('--no-optimize', 'skip the optimisation passes (DCE, CSE, constant folding, simplification)')
    .option('--no-fuse', 'one kernel per IR node (no elementwise fusion)')
    .option('--target <name>', 'plan kernels and memory for a GPU not at hand: portable (default), lavapipe, nvidia-h100, nvidia-h200')
    .option('--tuning <profile>', "a tuning profile file whose choices the kernels take (`visft tune`; what that GPU runs under it), or none")
    .option('--set <json>', SET_HELP)
    .option('-o, --output <file>', 'the bundle to write (.visftx)')
    .action(async (file: string | undefined, opts: import('./commands/compile.js').CompileOptions) => {
      process.exitCode = (await import('./commands/compile.js')).runCompile(file, opts);
    });

  cmd
    .command('run')
    .description('run a bundle: weights and inputs in, outputs out (safetensors)')
    .argument('<bundle>', 'a .visftx bundle')
    .option('--weights <file...>', 'weights (.safetensors, .pth/.pt/.ckpt); several files are merged')
    .option('--inputs <file>', 'inputs by name (.safetensors)')
    .option('--outputs <file>', 'where to write the outputs (.safetensors)')
    .option('--backend <name>', 'gpu (WebGPU through Dawn) or cpu (the float64 reference)', 'gpu')
    .option('--adapter <name>', 'pick the GPU adapter whose name contains this')
    .option('--tuning <profile>', TUNING_HELP)
    .option('--f64', 'write outputs as float64 (default float32)')
    .option('--kernels <which>', KERNELS_HELP, 'auto')
    .option('--set <json>', SET_HELP)
    .action(async (bundle: string, opts: import('./commands/run.js').RunOptions) => {
      process.exitCode = await (await import('./commands/run.js')).runRun(bundle, opts);
    });

  cmd
    .command('grammar')
    .description('export the grammar: railroad diagrams (offline HTML) or the serialized grammar (JSON)')
    .addOption(new Option('--html <file>', 'write railroad diagrams to an HTML file'))
    .addOption(new Option('--json', 'print the serialized grammar'))
    .action(async (opts: { html?: string; json?: boolean }) => {
      process.exitCode = (await import('./commands/grammar.js')).runGrammar(opts);
    });

  cmd
    .command('doctor')
    .description('find the WebGPU adapter, run a test dispatch, and say what to install when there is none')
    .option('--json', 'print JSON')
    .option('--adapter <name>', 'examine the adapter whose name contains this')
    .option('--tuning <profile>', TUNING_HELP)
    .option('--backend <name>', 'Dawn backend: vulkan, metal, d3d12, opengl')
    .action(async (opts: import('./commands/doctor.js').DoctorOptions) => {
      process.exitCode = await (await import('./commands/doctor.js')).runDoctor(opts);
    });

  cmd
    .command('bench')
    .description('time visft\'s kernels against tfjs-webgpu on the same GPU device: matmul, layernorm, softmax, GELU, attention and MSDeformAttn (forward, forward+backward) at EVA-G/E shapes')
    .option('--json', 'print the report as JSON')
    .addOption(new Option('--quick', 'shrunk sizes (the default on a software adapter)').conflicts('full'))
    .option('--full', 'model sizes even on a software adapter')
    .option('--rows <names>', 'comma-separated row names or prefixes (e.g. matmul_f32,gelu)')
    .option('--adapter <name>', 'pick the GPU adapter whose name contains this')
    .option('--tuning <profile>', TUNING_HELP)
    .option('--set <json>', SET_HELP)
    .option('--repeat <n>', 'timed iterations (set by the slower side; default: about 200 ms of work per side, 20 to 200; on a software adapter about 1 s, 5 to 50)')
    .action(async (opts: import('./commands/bench.js').BenchCliOptions) => {
      process.exitCode = await (await import('./commands/bench.js')).runBenchCommand(opts);
    });

  cmd
    .command('profile')
    .description("where a compiled program's GPU time goes: each kernel timed on its own, summed by kernel, beside the whole program; on seeded data, as `visft run` would run it here")
    .argument('<bundle>', 'a bundle (visft compile -o), e.g. a training step: --stage stage2 --vjp --precision fp16')
    .option('--json', 'print the profile as JSON')
    .option('--repeat <n>', 'timed runs; the medians count (default 5)')
    .option('--top <n>', 'how many of the slowest single kernels to list (default 10)')
    .option('--adapter <name>', 'pick the GPU adapter whose name contains this')
    .option('--tuning <profile>', TUNING_HELP)
    .option('--set <json>', SET_HELP)
    .option('--kernels <which>', KERNELS_HELP, 'auto')
    .action(async (bundle: string, opts: import('./commands/profile.js').ProfileCliOptions) => {
      process.exitCode = await (await import('./commands/profile.js')).runProfileCommand(bundle, opts);
    });

  cmd
    .command('tune')
    .description("time the kernels' equivalent forms on this GPU and write a tuning profile that later runs on it apply")
    .argument('[bundles...]', 'bundles (visft compile -o) to time on: your model and shapes, instead of the bench rows (with --rows, as well)')
    .option('--json', 'print the result as JSON')
    .option('--list', 'list the groups and options it tries, and on which rows, without timing anything')
    .option('--rows <names>', 'comma-separated bench rows or prefixes to time on (default: one of each kind and model)')
    .option('--groups <names>', "comma-separated groups to try, in this order (default: all that apply), e.g. 'dawn robustness'")
    .option('--seconds <n>', 'stop starting new timings after this long (default 600)')
    .option('--size <size>', 'full (default on hardware), quick (default on a software adapter), or tiny')
    .option('--out <file>', 'where to write the profile (default: the user profile folder, where later runs look)')
    .option('--from <profile>', "start from a profile's choices instead of the defaults: auto (the one that applies to this GPU) or a file; groups not tried keep them")
    .option('--adapter <name>', 'pick the GPU adapter whose name contains this')
    .action(async (bundles: string[], opts: import('./commands/tune.js').TuneCliOptions) => {
      process.exitCode = await (await import('./commands/tune.js')).runTuneCommand(bundles, opts);
    });

  cmd
    .command('extract-lora')
    .description('write the LoRA of a visft run (its latest checkpoint with LoRA) or weights file as ViSFT-style LoRA weights')
    .argument('<input>', 'an output or run folder, a ckpt-* folder, or a weights file')
    .option('-o, --output <file>', 'where to write (.safetensors, or .pth/.pt for torch.load)')
    .addOption(new Option('--format <keys>', 'key names: loralib (visual.blocks.N.attn.qkv.lora_A, as ViSFT released) or visft (unprefixed)').choices(['loralib', 'visft']).default('loralib'))
    .action(async (input: string, opts: import('./commands/lora.js').ExtractLoraOptions) => {
      process.exitCode = (await import('./commands/lora.js')).runExtractLora(input, opts);
    });

  cmd
    .command('merge-lora')
    .description('merge LoRA weights (ViSFT\'s released files or ours) into an EVA / EVA-CLIP / LAVIS backbone, once')
    .option('--weights <file>', 'the backbone (.pth/.pt or .safetensors)')
    .option('--lora <file>', 'the LoRA weights (.pt/.pth or .safetensors)')
    .option('--alpha <n>', 'LoRA alpha; scaling = alpha / r, r read from the shapes', '1')
    .option('-o, --output <file>', 'the merged backbone (.safetensors, or .pth/.pt)')
    .action(async (opts: import('./commands/lora.js').MergeLoraOptions) => {
      process.exitCode = (await import('./commands/lora.js')).runMergeLora(opts);
    });

  cmd
    .command('train')
    .description('train a pipeline: stage 1 heads on the frozen backbone, stage 2 LoRA with one task per update; checkpoints, resume, exports')
    .argument('<file>', 'a pipeline .visft file')
    .option('--stage <name>', 'the stage to run, or all (in order)', 'all')
    .option('--data <dir>', 'read every data set from this folder (overrides their root)')
    .option('--out <dir>', 'the run folder: checkpoints, metrics.jsonl, loss curves')
    .option('--resume', 'continue from the latest checkpoints in --out')
    .option('--max-updates <n>', 'stop each run after n updates (the schedule is laid over n)')
    .option('--seed <n>', 'the run seed (initialisation, data order, dropout, task draws); default 0')
    .option('--backend <name>', 'gpu (WebGPU through Dawn) or cpu (the float64 reference; slow)', 'gpu')
    .option('--adapter <name>', 'pick the GPU adapter whose name contains this')
    .option('--tuning <profile>', TUNING_HELP)
    .option('--set <json>', SET_HELP)
    .option('--tasks <names>', 'train only these tasks (comma-separated), e.g. the caption task of a three-task pipeline')
    .option('--plan', 'print the resolved training plan as JSON and stop')
    .action(async (file: string, opts: import('./commands/train.js').TrainCliOptions) => {
      process.exitCode = await (await import('./commands/train.js')).runTrain(file, opts);
    });

  cmd
    .command('make-demo-data')
    .description('write seeded synthetic data in the real formats: a caption set (HDF5 + JSON) and COCO instances (JSON + JPEGs)')
    .argument('<dir>', 'the folder to write (empty, new, or an earlier demo)')
    .option('--seed <n>', 'the seed; the same seed gives the same bytes (default 1)')
    .option('--images <n>', 'training images per set; validation gets an eighth (default 256)')
    .action(async (dir: string, opts: import('./commands/make-demo-data.js').MakeDemoDataOptions) => {
      process.exitCode = await (await import('./commands/make-demo-data.js')).runMakeDemoData(dir, opts);
    });

  return cmd;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await program().parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help and --version end here too, with exit code 0
      return e.exitCode === 0 ? 0 : 2;
    }
    if (e instanceof UsageError || e instanceof TuningProfileError) {
      process.stderr.write(`visft: ${e.message}\n`);
      return 2;
    }
    process.stderr.write(`visft: internal error (please report it): ${(e as Error).message ?? String(e)}\n`);
    return 1;
  }
}
