// CLI: node dist/runtime/device/probe-main.js [--json] [--backend NAME]
// Prints one line (or a JSON object with --json) and exits 0 when a working WebGPU adapter was found, else 1.

import { describeProbe, probeWebGPU, type ProbeOptions } from './probe.js';

function usage(): never {
  process.stderr.write('usage: probe-main [--json] [--backend vulkan|metal|d3d12|opengl|opengles|null]\n');
  process.exit(2);
}

async function main(argv: string[]): Promise<number> {
  let json = false;
  const options: ProbeOptions = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--json') json = true;
    else if (a === '--backend') {
      const v = argv[++i];
      if (!v) usage();
      options.backend = v;
    } else if (a.startsWith('--backend=')) options.backend = a.slice('--backend='.length);
    else if (a === '-h' || a === '--help') usage();
    else usage();
  }
  const result = await probeWebGPU(options);
  process.stdout.write(json ? JSON.stringify(result, null, 2) + '\n' : describeProbe(result) + '\n');
  return result.ok ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stdout.write(`webgpu: no working adapter: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
