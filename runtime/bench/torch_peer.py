#!/usr/bin/env python3
# The PyTorch peer for `visft bench` on NVIDIA machines: times the same rows with CUDA events (cuBLAS for
# matmul, TF32 off for f32), after warm-up, and prints JSON rows {name, shape, dtype, ms, tflops}.
# Usage: python3 runtime/bench/torch_peer.py [--tokens 256]
import argparse, json, torch

p = argparse.ArgumentParser()
p.add_argument("--tokens", type=int, default=256)
p.add_argument("--repeat", type=int, default=50)
a = p.parse_args()
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
dev = "cuda"
T = a.tokens

def timed(fn, flops):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(a.repeat):
        fn()
    end.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(end) / a.repeat
    return ms, (flops / (ms * 1e-3) / 1e12 if flops else None)

rows = []
for name, (m, k, n) in {
    "matmul eva-g qkv": (T, 1408, 4224), "matmul eva-g fc1": (T, 1408, 6144), "matmul eva-g fc2": (T, 6144, 1408),
    "matmul eva-e qkv": (T, 1792, 5376), "matmul eva-e fc1": (T, 1792, 15360), "matmul 4096^3": (4096, 4096, 4096),
}.items():
    for dt in (torch.float32, torch.float16):
        x = torch.randn(m, k, device=dev, dtype=dt)
        w = torch.randn(k, n, device=dev, dtype=dt)
        ms, tf = timed(lambda: x @ w, 2 * m * k * n)
        rows.append({"name": name, "shape": [m, k, n], "dtype": str(dt).split(".")[-1], "ms": ms, "tflops": tf})
x = torch.randn(T, 1408, device=dev)
ln = torch.nn.LayerNorm(1408, eps=1e-6).to(dev)
rows.append({"name": "layernorm", "shape": [T, 1408], "dtype": "float32", "ms": timed(lambda: ln(x), 0)[0], "tflops": None})
s = torch.randn(16 * T, T, device=dev)
rows.append({"name": "softmax", "shape": [16 * T, T], "dtype": "float32", "ms": timed(lambda: torch.softmax(s, -1), 0)[0], "tflops": None})
g = torch.randn(T, 6144, device=dev)
rows.append({"name": "gelu", "shape": [T, 6144], "dtype": "float32", "ms": timed(lambda: torch.nn.functional.gelu(g), 0)[0], "tflops": None})
print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "rows": rows}, indent=1))
