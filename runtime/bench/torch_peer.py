#!/usr/bin/env python3
# The PyTorch peer for `visft bench` on NVIDIA machines: times the same rows with CUDA events (cuBLAS for
# matmul, TF32 off for f32), after warm-up, and prints JSON rows {name, shape, dtype, pass, ms, tflops}.
#   matmul, layernorm, softmax, gelu: the bench's ViT-token rows (--tokens).
#   attention: torch.nn.functional.scaled_dot_product_attention at the bench's [B, H, S, D] shapes, f16 and
#     f32, forward and forward+backward (torch.autograd.grad of the output for a cotangent: dq, dk, dv).
#   msdeform: MSDeformAttn as the original's grid_sample composition (Deformable-DETR's
#     ms_deform_attn_core_pytorch; bilinear, zero padding, align_corners=False), f16 and f32, forward and
#     forward+backward, at the Mask2Former pixel decoder's shapes (one 73x73 level, and its three levels 64², 32²,
#     16²; 8 heads of 32, 4 points).
# --device cpu runs f32 only with the wall clock (a check of the script, not a peer); a torch without
# scaled_dot_product_attention (< 2.0) reports those rows as unavailable.
# Usage: python3 runtime/bench/torch_peer.py [--tokens 256] [--repeat 50] [--rows attention,msdeform] [--device cuda]
import argparse, json, time
import torch
import torch.nn.functional as F


def ms_deform_attn_grid_sample(value, levels, loc, attw):
    """The original's composition: value [N, S, M, Dh], loc [N, Lq, M, L, P, 2] in [0, 1], attw [N, Lq, M, L, P]."""
    n, _, m, dh = value.shape
    _, lq, _, nl, npt, _ = loc.shape
    per_level = value.split([h * w for h, w in levels], dim=1)
    grids = 2 * loc - 1  # grid_sample's [-1, 1]
    samples = []
    for l, (h, w) in enumerate(levels):
        v = per_level[l].flatten(2).transpose(1, 2).reshape(n * m, dh, h, w)
        g = grids[:, :, :, l].transpose(1, 2).flatten(0, 1)  # [N·M, Lq, P, 2]
        samples.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))  # [N·M, Dh, Lq, P]
    weights = attw.transpose(1, 2).reshape(n * m, 1, lq, nl * npt)
    out = (torch.stack(samples, dim=-2).flatten(-2) * weights).sum(-1).view(n, m * dh, lq)
    return out.transpose(1, 2).contiguous()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--rows", default="", help="comma-separated name prefixes (matmul, layernorm, softmax, gelu, attention, msdeform)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="the bench's quick attention and msdeform shapes")
    a = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = a.device
    cuda = dev.startswith("cuda")
    T = a.tokens
    wanted = [w.strip() for w in a.rows.split(",") if w.strip()]
    DTYPES = (torch.float32, torch.float16) if cuda else (torch.float32,)

    def want(name):
        return not wanted or any(name.startswith(w) for w in wanted)

    def timed(fn, flops):
        for _ in range(5):
            fn()
        if not cuda:
            t0 = time.perf_counter()
            for _ in range(a.repeat):
                fn()
            ms = (time.perf_counter() - t0) * 1e3 / a.repeat
        else:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(a.repeat):
                fn()
            end.record()
            torch.cuda.synchronize()
            ms = start.elapsed_time(end) / a.repeat
        return ms, (flops / (ms * 1e-3) / 1e12 if flops else None)

    def dtname(dt):
        return str(dt).split(".")[-1]

    rows = []

    def row(name, shape, dt, pss, fn, flops):
        ms, tf = timed(fn, flops)
        rows.append({"name": name, "shape": shape, "dtype": dtname(dt), "pass": pss, "ms": ms, "tflops": tf})

    # ------------------------------------------------------------------------------------------- ViT-token rows
    for name, (m, k, n) in {
        "matmul eva-g qkv": (T, 1408, 4224), "matmul eva-g fc1": (T, 1408, 6144), "matmul eva-g fc2": (T, 6144, 1408),
        "matmul eva-e qkv": (T, 1792, 5376), "matmul eva-e fc1": (T, 1792, 15360), "matmul eva-e fc2": (T, 15360, 1792), "matmul 4096^3": (4096, 4096, 4096),
    }.items():
        if not want(name):
            continue
        for dt in DTYPES:
            x = torch.randn(m, k, device=dev, dtype=dt)
            w = torch.randn(k, n, device=dev, dtype=dt)
            row(name, [m, k, n], dt, "forward", lambda: x @ w, 2 * m * k * n)
    if want("layernorm"):
        x = torch.randn(T, 1408, device=dev)
        ln = torch.nn.LayerNorm(1408, eps=1e-6).to(dev)
        row("layernorm", [T, 1408], torch.float32, "forward", lambda: ln(x), 0)
    if want("softmax"):
        s = torch.randn(16 * T, T, device=dev)
        row("softmax", [16 * T, T], torch.float32, "forward", lambda: torch.softmax(s, -1), 0)
    if want("gelu"):
        g = torch.randn(T, 6144, device=dev)
        row("gelu", [T, 6144], torch.float32, "forward", lambda: F.gelu(g), 0)

    # ------------------------------------------------------------------------------------------- attention
    # [B, H, S, D] as runtime/bench/rows-attention.ts: caption 8 images of 18² tokens, detection 48², segmentation 73².
    ATTN_TASKS = [("caption", 2, 81), ("detection", 1, 144), ("segmentation", 1, 324)] if a.quick else [("caption", 8, 324), ("detection", 1, 2304), ("segmentation", 1, 5329)]
    ATTN_MODELS = [("eva-g", 4, 22), ("eva-e", 4, 28)] if a.quick else [("eva-g", 16, 88), ("eva-e", 16, 112)]
    sdpa = getattr(F, "scaled_dot_product_attention", None)
    for model, heads, d in ATTN_MODELS:
        for task, b, s in ATTN_TASKS:
            name = f"attention {model} {task}"
            if not want(name):
                continue
            shape = [b, heads, s, d]
            fwd_flops = 4 * b * heads * s * s * d
            for dt in DTYPES:
                if sdpa is None:
                    for pss in ("forward", "forward+backward"):
                        rows.append({"name": name, "shape": shape, "dtype": dtname(dt), "pass": pss, "unavailable": f"torch {torch.__version__} has no scaled_dot_product_attention"})
                    continue
                q, k, v = (torch.randn(*shape, device=dev, dtype=dt, requires_grad=True) for _ in range(3))
                dy = torch.randn(*shape, device=dev, dtype=dt)
                with torch.no_grad():
                    row(name, shape, dt, "forward", lambda: sdpa(q, k, v), fwd_flops)
                # FlashAttention-2's count for forward+backward: 3.5x the forward.
                row(name, shape, dt, "forward+backward", lambda: torch.autograd.grad(sdpa(q, k, v), (q, k, v), dy), 3.5 * fwd_flops)

    # As runtime/bench/rows-attention.ts MSDEFORM_SIZES: one 73x73 level, and Mask2Former's three (64², 32², 16²).
    MSDEFORM_ROWS = [("msdeform m2f pixel", [(18, 18)] if a.quick else [(73, 73)]), ("msdeform m2f 3lvl", [(16, 16), (8, 8), (4, 4)] if a.quick else [(64, 64), (32, 32), (16, 16)])]
    for name, levels in MSDEFORM_ROWS:
        if not want(name):
            continue
        m, dh, npt = 8, 32, 4
        s = sum(h * w for h, w in levels)
        shape = [1, s, m, dh]
        for dt in DTYPES:
            value = torch.rand(1, s, m, dh, device=dev, dtype=dt).mul_(2).sub_(1).requires_grad_()
            loc = torch.rand(1, s, m, len(levels), npt, 2, device=dev, dtype=dt).requires_grad_()
            attw = torch.rand(1, s, m, len(levels), npt, device=dev, dtype=dt).mul_(0.5).requires_grad_()
            dy = torch.randn(1, s, m * dh, device=dev, dtype=dt)
            with torch.no_grad():
                row(name, shape, dt, "forward", lambda: ms_deform_attn_grid_sample(value, levels, loc, attw), 0)
            row(name, shape, dt, "forward+backward", lambda: torch.autograd.grad(ms_deform_attn_grid_sample(value, levels, loc, attw), (value, loc, attw), dy), 0)

    print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name(0) if cuda else dev, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
