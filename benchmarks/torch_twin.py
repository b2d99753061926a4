"""PyTorch twins of the paper's four CIFAR-10 models, trained by a plain PyTorch loop: the comparison point of
benchmarks/vs_pytorch.py. Runs in an environment with torch (no TensorFlow import), prints one JSON line.

    python benchmarks/torch_twin.py --model small_inception --steps 6 --epochs 3

Same shapes as the package's models (Appendix A; rethink_tf/models): 28×28×3 inputs, batch 128, SGD with momentum
0.9, softmax cross-entropy; same layer widths, kernel sizes, strides and output shapes (torch pads SAME
convolutions symmetrically where TF pads the bottom/right, which changes no arithmetic). Data: in-memory uint8
images; each step gathers a random batch, scales it to [0, 1] and whitens each image (the package's per-step work).
Images/s: train steps only, per epoch, best epoch after the first (as the package's history times them).
"""

import argparse
import json
import time

import torch
from torch import nn


def conv_module(c_in, c_out, k, stride=1, bn=True):
    """Figure 3(c): Conv -> BN (β only, as the package's) -> ReLU."""
    layers = [nn.Conv2d(c_in, c_out, k, stride, padding=k // 2, bias=not bn)]
    if bn:
        b = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.001)
        b.weight.requires_grad_(False)  # scale=False in the package's model
        layers.append(b)
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Inception(nn.Module):  # Figure 3(b): 1×1 ‖ 3×3, concatenated
    def __init__(self, c_in, ch1, ch3, bn):
        super().__init__()
        self.a, self.b = conv_module(c_in, ch1, 1, bn=bn), conv_module(c_in, ch3, 3, bn=bn)

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], 1)


class Downsample(nn.Module):  # Figure 3(d): 3×3/2 conv ‖ 3×3/2 max-pool
    def __init__(self, c_in, ch3, bn):
        super().__init__()
        self.a, self.pool = conv_module(c_in, ch3, 3, 2, bn=bn), nn.MaxPool2d(3, 2, padding=1)

    def forward(self, x):
        return torch.cat([self.a(x), self.pool(x)], 1)


def small_inception(bn=True):
    return nn.Sequential(
        conv_module(3, 96, 3, bn=bn), Inception(96, 32, 32, bn), Inception(64, 32, 48, bn), Downsample(80, 80, bn),
        Inception(160, 112, 48, bn), Inception(160, 96, 64, bn), Inception(160, 80, 80, bn), Inception(160, 48, 96, bn),
        Downsample(144, 96, bn), Inception(240, 176, 160, bn), Inception(336, 176, 160, bn),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(336, 10))


def small_alexnet():
    # TF's LRN (depth_radius 4, alpha 0.001/9 not divided by the window) is torch's with size 9, alpha × 9
    lrn = dict(size=9, alpha=0.001 / 9 * 9, beta=0.75, k=1.0)
    return nn.Sequential(
        nn.Conv2d(3, 64, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, padding=1), nn.LocalResponseNorm(**lrn),
        nn.Conv2d(64, 64, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, padding=1), nn.LocalResponseNorm(**lrn),
        nn.Flatten(), nn.Linear(7 * 7 * 64, 384), nn.ReLU(inplace=True), nn.Linear(384, 192), nn.ReLU(inplace=True),
        nn.Linear(192, 10))


def mlp(depth):
    layers, width = [nn.Flatten()], 28 * 28 * 3
    for _ in range(depth):
        layers += [nn.Linear(width, 512), nn.ReLU(inplace=True)]
        width = 512
    return nn.Sequential(*layers, nn.Linear(width, 10))


MODELS = {"mlp_1x512": lambda: mlp(1), "mlp_3x512": lambda: mlp(3), "small_alexnet": small_alexnet,
          "small_inception": small_inception}
LEARNING_RATE = {"small_inception": 0.1}  # the recipes': 0.1 Inception, 0.01 the others


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), required=True)
    ap.add_argument("--steps", type=int, default=20, help="steps per epoch")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = MODELS[args.model]()
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                          lr=LEARNING_RATE.get(args.model, 0.01), momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    n = args.steps * args.batch
    images = torch.randint(0, 256, (n, 3, 28, 28), dtype=torch.uint8)  # NCHW: torch's native layout
    labels = torch.randint(0, 10, (n,))
    model.train()
    rates = []
    for _ in range(args.epochs):
        order = torch.randperm(n)
        start = time.perf_counter()
        for s in range(args.steps):
            idx = order[s * args.batch:(s + 1) * args.batch]
            x = images[idx].float() / 255.0
            flat = x.flatten(1)
            std = flat.std(1, unbiased=False).clamp_min(1.0 / flat.shape[1] ** 0.5)
            x = ((flat - flat.mean(1, keepdim=True)) / std[:, None]).view_as(x)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), labels[idx])
            loss.backward()
            opt.step()
        rates.append(n / (time.perf_counter() - start))
    print(json.dumps({"framework": "pytorch", "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "model": args.model, "trainable_parameters": params, "steps_per_epoch": args.steps,
                      "images_per_s": round(max(rates[1:] or rates), 1), "epochs": [round(r, 1) for r in rates]}))


if __name__ == "__main__":
    main()
