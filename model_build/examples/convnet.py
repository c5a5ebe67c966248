"""A small fully convolutional network with dynamic batch, height and width, built locally.

Stem (stride 2), two residual stages (the second one strided), a 1x1 head: 16 maps at a
quarter of the input resolution, like a dense detector or segmenter. It is trained here for a
few hundred steps (about a minute on 2 cores, seeded) to predict dense statistics of its input
(local means, extremes and contrast per colour channel, and the disc's mask), so its weights
have the structure of a trained network rather than random noise; preparation folds the
BatchNorms into the convolutions. Images are synthetic (smooth colour fields with a disc and
sensor noise), made here: no download. Calibration images are 64x64, evaluation and held-back images 80x96, so the
INT8 model is calibrated at one size and judged at another.

``python -m model_build.examples.convnet [DIR]`` (default ``~/.cache/inferops/convnet``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

DEFAULT_DIR = Path.home() / ".cache" / "inferops" / "convnet"
SIZES = {"calib": (64, 64), "eval": (80, 96), "heldout": (80, 96)}
SEEDS = {"calib": 11, "eval": 12, "heldout": 13}


def images(n: int, height: int, width: int, seed: int) -> np.ndarray:
    """Smooth random colour fields plus a few hard edges and a little sensor noise, in [0, 1]."""
    rng = np.random.default_rng(seed)
    low = rng.random((n, 3, max(2, height // 8), max(2, width // 8)), dtype=np.float32)
    field = low.repeat(8, axis=2).repeat(8, axis=3)[:, :, :height, :width]
    for _ in range(2):  # box blur: smooth the 8x8 blocks into gradients
        field = (field + np.roll(field, 4, axis=2) + np.roll(field, 4, axis=3) + np.roll(field, (4, 4), (2, 3))) / 4
    yy, xx = np.mgrid[:height, :width]
    for i in range(n):  # one bright or dark disc per image
        cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(4, max(5, height // 4))
        field[i][:, (yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.random(3, dtype=np.float32)[:, None]
    field += rng.normal(0, 0.02, field.shape).astype(np.float32)
    return np.clip(field, 0.0, 1.0).astype(np.float32)


def _net():
    from model_build.export import import_torch

    torch = import_torch()
    nn = torch.nn

    def cbr(cin: int, cout: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
        layers = [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout)]
        return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)

    class Residual(nn.Module):
        def __init__(self, ch: int) -> None:
            super().__init__()
            self.a, self.b = cbr(ch, ch), cbr(ch, ch, relu=False)

        def forward(self, x):
            return torch.relu(x + self.b(self.a(x)))

    class ConvNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(cbr(3, 32, 2), Residual(32), Residual(32), cbr(32, 64, 2), Residual(64),
                                      Residual(64))
            self.head = nn.Conv2d(64, 16, 1)

        def forward(self, image):
            return self.head(self.body(image))

    torch.manual_seed(0)
    return torch, ConvNet()


def build(out_dir: Path = DEFAULT_DIR, samples: int = 64) -> dict[str, Path]:
    """Export the model and write ``calib.npz``, ``eval.npz`` and ``heldout.npz``; reuses an
    existing export."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"model": out_dir / "convnet.onnx", **{k: out_dir / f"{k}.npz" for k in SIZES}}
    for split, (h, w) in SIZES.items():
        np.savez(paths[split], image=images(samples, h, w, SEEDS[split]))
    if not paths["model"].is_file():
        _export(paths["model"])
    return paths


def _targets(torch, x):
    """16 dense targets at 1/4 resolution: per colour channel the local mean, max, min, contrast
    and mean square (15), and how much of the cell is brighter than the image's mean (1)."""
    f = torch.nn.functional
    mean, peak, low = f.avg_pool2d(x, 4), f.max_pool2d(x, 4), -f.max_pool2d(-x, 4)
    bright = f.avg_pool2d((x.mean(1, keepdim=True) > x.mean((1, 2, 3), keepdim=True)).float(), 4)
    return torch.cat([mean, peak, low, peak - low, f.avg_pool2d(x * x, 4), bright], dim=1) * 4 - 2


def _export(path: Path, steps: int = 300) -> None:
    from model_build.export import export_torch

    torch, net = _net()
    torch.set_num_threads(2)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for step in range(steps):
        x = torch.from_numpy(images(16, 64, 64, 1000 + step))
        loss = torch.nn.functional.mse_loss(net(x), _targets(torch, x))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    net.eval()
    tmp = path.with_suffix(".tmp.onnx")
    export_torch(net, {"image": images(2, 64, 64, 99)}, tmp, output_names=["scores"],
                 dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                               "scores": {0: "batch", 2: "h", 3: "w"}})
    tmp.replace(path)


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR))
