"""Train the small digits CNN (scikit-learn's bundled 8x8 digits) and export it to ONNX.

Writes, next to this file: ``digits_cnn.onnx`` (dynamic batch, input ``pixels`` [N,1,8,8] float32,
output ``logits`` [N,10]), ``calib.npz`` (training images), ``eval.npz`` and ``labels.npy``
(the held-out split). Runs in well under a minute on 2 CPU cores:
``python -m model_build.examples.digits.train``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 0


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)


def build_net():
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 128), nn.ReLU(),
        nn.Linear(128, 10),
    )


def train(out_dir: Path = HERE, epochs: int = 15) -> dict[str, float]:
    import torch

    from model_build.export import export_torch

    torch.manual_seed(SEED)
    x_tr, x_te, y_tr, y_te = _data()
    net = build_net()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss_fn(net(xt[idx]), yt[idx]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = float((net(torch.from_numpy(x_te)).argmax(1).numpy() == y_te).mean())
    out_dir.mkdir(parents=True, exist_ok=True)
    export_torch(net, {"pixels": x_te[:1]}, out_dir / "digits_cnn.onnx", output_names=["logits"])
    np.savez(out_dir / "calib.npz", pixels=x_tr[:256])
    np.savez(out_dir / "eval.npz", pixels=x_te)
    np.save(out_dir / "labels.npy", y_te)
    return {"test_accuracy": acc, "train_samples": len(x_tr), "eval_samples": len(x_te)}


if __name__ == "__main__":
    print(train())
