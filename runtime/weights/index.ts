// The weights I/O layer: host tensors, safetensors, torch.save checkpoints, key mapping.
export * from './tensor.js';
export * from './safetensors.js';
export { loadTorch, loadStateDict, selectStateDict, saveTorchZip, isHostTensor, type TorchLoadOptions, type LoadStateDictOptions } from './torch-zip.js';
export { PyDict, PySet, PyOpaque, PickleError, UnsafePickleError, isTuple } from './pickle.js';
export { ZipError } from './zip.js';
export * from './keymap.js';
