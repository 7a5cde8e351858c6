import time, torch
from deltainv.kernels import solve_tril
for bt, kw in [(64, dict(method="mxr_refine", precision="fp32")),
               (64, dict(method="mxr_refine", precision="tf32", base_precision="tf32x3", refine_precision="tf32x3")),
               (128, dict(method="mxr", precision="tf32", base_precision="tf32x3"))]:
    T = 4 * bt
    A = torch.randn(1, T, 2, bt, device="cuda") * 0.05
    r = torch.arange(T, device="cuda")[:, None] % bt
    A = A * (torch.arange(bt, device="cuda")[None, :] < r).float()[None, :, None, :]
    t = time.time()
    solve_tril(A, None, None, torch.float32, backend="triton", **kw)
    torch.cuda.synchronize()
    print("compile+run", bt, kw, f"{time.time() - t:.1f}s", flush=True)
