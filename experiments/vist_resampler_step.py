"""vist's resampler in the distillation's layout, dense masked scores against scores per stretch (issue 24, item 5).

The regression's step is the resampler (and the context blocks) on about 8 images of 16 lines x 96 encoder
tokens, 64 local latents and a CLS latent, width 576, depth 2: forward and backward, one thread. The code before
the change is read from git (`BEFORE`, the commit this was measured against) into the same process, and the two
alternate, so the machine's load is shared. `python experiments/vist_resampler_step.py [BEFORE]`."""

import importlib.util
import subprocess
import sys
import tempfile
import time

import torch

from gistify.vist import resampler as after

before_commit = sys.argv[1] if len(sys.argv) > 1 else "6cd3494"
source = subprocess.run(
    ["git", "show", f"{before_commit}:src/gistify/vist/resampler.py"], capture_output=True, text=True, check=True
).stdout
with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
    f.write(source)
spec = importlib.util.spec_from_file_location("resampler_before", f.name)
before = importlib.util.module_from_spec(spec)
sys.modules["resampler_before"] = before  # dataclasses look their module up
spec.loader.exec_module(before)

torch.set_num_threads(1)
sizes = dict(input_dim=120, dim=576, depth=2, heads=8, head_dim=64, latents=64, cls=True, max_tokens=1536, local=True)
torch.manual_seed(0)
new = after.PerceiverResampler(after.ResamplerConfig(**sizes))
old = before.PerceiverResampler(before.ResamplerConfig(**sizes))
old.load_state_dict(new.state_dict())
features = torch.randn(8, 1536, 120)
mask = torch.ones(8, 1536, dtype=torch.bool)
mask[-1, 700:] = False  # the last image of a window: part of it blank
same = torch.allclose(new(features, mask).tokens, old(features, mask).tokens, atol=1e-4)
print(f"same memory: {same}")
times = {"dense (before)": [], "per stretch (after)": []}
for _ in range(4):
    for name, model in (("dense (before)", old), ("per stretch (after)", new)):
        model.zero_grad()
        t = time.perf_counter()
        model(features, mask).tokens.square().mean().backward()
        times[name].append(time.perf_counter() - t)
for name, ts in times.items():
    ts = sorted(ts)
    print(f"{name}: median {(ts[1] + ts[2]) / 2:.3f} s (min {ts[0]:.3f}, max {ts[-1]:.3f}) per forward + backward")
