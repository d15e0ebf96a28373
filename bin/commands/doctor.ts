// `visft doctor`: which WebGPU adapter visft would use, whether it runs a dispatch, and what to install.
import { probeWebGPU, defaultBackend } from '../../runtime/device/probe.js';

export async function runDoctor(opts: { json?: boolean }): Promise<number> {
  const result = await probeWebGPU({ backend: defaultBackend() });
  if (opts.json) {
    process.stdout.write(JSON.stringify(result, null, 2) + '\n');
    return result.ok ? 0 : 1;
  }
  if (result.ok && result.adapter) {
    const a = result.adapter;
    process.stdout.write(`adapter: ${a.description || a.device || a.vendor} (${a.vendor}${a.architecture ? ', ' + a.architecture : ''})\n`);
    process.stdout.write(`backend: ${result.backend ?? 'default'}${a.isFallbackAdapter ? ' (software adapter: correct but slow; numbers from it are not speed claims)' : ''}\n`);
    process.stdout.write(`features: ${(result.features ?? []).join(', ') || 'none'}\n`);
    process.stdout.write('test dispatch: ok\n');
    return 0;
  }
  process.stdout.write(`no working WebGPU adapter: ${result.error ?? 'unknown reason'}\n`);
  process.stdout.write(installHint() + '\n');
  return 1;
}

function installHint(): string {
  if (process.platform === 'linux') {
    return 'install a Vulkan driver: on Debian 12, Mesa 25 from bookworm-backports (`apt-get install -t bookworm-backports mesa-vulkan-drivers libvulkan1`), or run scripts/setup.sh which does it';
  }
  if (process.platform === 'darwin') return 'macOS uses Metal: update macOS and make sure the `webgpu` npm package installed its darwin build';
  return 'Windows uses D3D12: update the GPU driver';
}
