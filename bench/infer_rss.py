"""Peak host memory of `rvos-kit infer` against the number of videos (issue 10, item 3).

The published pth scripts keep every video's full-resolution logits in one dict until a
single ``torch.save`` at the very end (~10^2 GB for the test split). ``infer`` calls the
upstream worker on ``--chunk-videos`` videos at a time and streams each chunk's dump into
the tree and scores before the next. This measures what that buys, with a synthetic worker
that behaves like the published ones (builds its chunk's ``{video: {exp: {mask_logits,
class_info}}}`` dict in RAM at full resolution, then ``torch.save`` s it) so that only the
kit's own streaming is measured, not a model's weights (add the model's own resident size,
about 1.6-2.5 GB for the Swin models on the CPU, see the closing note).

Each (videos, chunk) point runs ``infer_videos`` in a fresh child process and reports its
peak resident size (VmHWM). ``chunk = all`` is the published behaviour.

    nice .venv/bin/python bench/infer_rss.py [--videos 2 8 32] [--frames 12] [--exps 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, types, torch
from pathlib import Path
from PIL import Image
from rvos_kit.stages.rvos.infer import core, infer_videos

d, chunk = Path(sys.argv[1]), int(sys.argv[2])
h, w = (int(x) for x in sys.argv[3:5])

def run(req, videos, out):
    yy = torch.linspace(-4, 4, h)[:, None]
    xx = torch.linspace(-4, 4, w)[None, :]
    for i, part in enumerate(core.chunks(videos, req.chunk)):
        tmp = {}  # as the published worker: the whole chunk in RAM, saved once
        for j, v in enumerate(part):
            tmp[v.name] = {}
            for e in v.exp_ids:
                x = torch.empty(len(v.frames), h, w)
                for t in range(len(v.frames)):
                    x[t] = yy * (1 + t % 3) + torch.sin(xx * (j % 5 + 1)) * 2 - 0.5
                tmp[v.name][e] = {"mask_logits": x, "class_info": [0.1] * len(v.frames)}
        torch.save(tmp, req.work / f"chunk{i}.pth")
        del tmp
        out.add_dump(req.work / f"chunk{i}.pth")

drv = types.ModuleType("rvos_kit.stages.rvos.infer._bench")
drv.UPSTREAM_FOLDERS = ()
drv.run = run
sys.modules["rvos_kit.stages.rvos.infer._bench"] = drv
core.MODELS["bench"] = ("_bench", "logits")
(d / "ckpt").write_bytes(b"x")
(d / "pre").mkdir(exist_ok=True)
infer_videos("bench", None, meta=d / "meta.json", images=d / "img", split="test",
             upstream=d, checkpoint=d / "ckpt", pretrained=d / "pre",
             out_dir=d / f"out{chunk}", device="cpu", chunk=chunk)
for line in open("/proc/self/status"):
    if line.startswith(("VmHWM", "VmRSS")):
        print(line.split()[0].rstrip(":"), int(line.split()[1]) // 1024, flush=True)
"""


def make_inputs(d: Path, n_videos: int, n_frames: int, n_exps: int, h: int, w: int) -> None:
    from PIL import Image

    frames = [f"{5 * t:05d}" for t in range(n_frames)]
    videos = {}
    for i in range(n_videos):
        vid = f"v{i:04d}"
        videos[vid] = {"expressions": {str(e): {"exp": "x"} for e in range(n_exps)},
                       "frames": frames}  # fmt: skip
        (d / "img" / vid).mkdir(parents=True)
        for f in frames:  # only the frame files' presence is checked; the size comes from h, w
            Image.new("RGB", (8, 8)).save(d / "img" / vid / f"{f}.jpg")
    (d / "meta.json").write_text(json.dumps({"videos": videos}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, nargs="+", default=[2, 8, 32])
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--exps", type=int, default=2)
    ap.add_argument("--size", type=int, nargs=2, default=[720, 1280], metavar=("H", "W"))
    a = ap.parse_args()
    h, w = a.size
    per_video = a.exps * a.frames * h * w * 4 / 2**20
    print(f"{a.frames} frames x {a.exps} expressions per video at {h}x{w}: "
          f"{per_video:.0f} MiB of float32 logits per video")  # fmt: skip
    print(f"{'videos':>6} {'chunk':>6} {'dump MiB':>9} {'peak RSS MiB':>13}")
    for n in a.videos:
        for chunk in (1, n):
            with tempfile.TemporaryDirectory(prefix="infer-rss-") as tmp:
                d = Path(tmp)
                make_inputs(d, n, a.frames, a.exps, h, w)
                cmd = [sys.executable, "-c", CHILD, str(d), str(chunk), str(h), str(w)]
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    print(r.stderr[-3000:], file=sys.stderr)
                    return 1
                peak = dict(line.split() for line in r.stdout.splitlines())["VmHWM"]
            label = "all" if chunk == n and n > 1 else str(chunk)
            print(f"{n:>6} {label:>6} {per_video * n:>9.0f} {peak:>13}")
            if n == 1:
                break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
