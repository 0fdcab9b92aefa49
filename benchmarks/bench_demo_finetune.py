"""One chosen architecture of the demo trained for a fixed number of steps, then scored on the whole
Fashion-MNIST test split: the ablations behind configs/demo_cpu.yaml and the demo's export stage.

    python benchmarks/bench_demo_finetune.py --ckpt runs/demo/supernet/last.pt \\
        --genome 0,9,4,6,8,2,1,4,12,12,0,0,5,0,4,8,9,2,2 [--steps 600] [--lr 0.1] [--batch 64]
        [--augment 0|1] [--scratch 0|1] [--ls 0.1]

``--scratch 0`` starts from the supernet's weights (the path's copy, LET folded), ``--scratch 1``
from fresh ones (``build_network(..., zero_init_residual=True)``, what the demo's export stage
does). SGD with Nesterov momentum, cosine schedule, 1 torch thread, channels_last. Prints one JSON
line with the settings, the top-1 and the training seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from fastscarlet.data import build_loader
from fastscarlet.evaluate import evaluate
from fastscarlet.nn.network import build_network
from fastscarlet.train.checkpoint import load_supernet


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="a demo supernet (DIR/supernet/last.pt)")
    p.add_argument("--genome", required=True, help="comma-separated choice indices")
    p.add_argument("--data", default="runs/fashion-mnist")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--ls", type=float, default=0.1, help="label smoothing")
    p.add_argument("--augment", type=int, default=1)
    p.add_argument("--scratch", type=int, default=0)
    p.add_argument("--wd", type=float, default=5e-5)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    supernet = load_supernet(a.ckpt, map_location="cpu")
    genome = [int(x) for x in a.genome.split(",")]
    size = supernet.config.data.image_size
    if a.scratch:
        net = build_network(supernet.space, genome, identity="fold", zero_init_residual=True)
    else:
        net = supernet.subnet(genome, identity="fold")
    net = net.to(memory_format=torch.channels_last).train()
    common = dict(image_size=size, device="cpu", recipe="cifar", num_workers=0, channels_last=True)
    train = build_loader(Path(a.data), "train", "torch", batch_size=a.batch,
                         augment=bool(a.augment), shuffle=True, drop_last=True, **common)  # fmt: skip
    test = build_loader(Path(a.data), "val", "torch", batch_size=250, **common)
    opt = torch.optim.SGD(net.parameters(), lr=a.lr, momentum=0.9, nesterov=True,
                          weight_decay=a.wd)  # fmt: skip
    step, epoch, t0 = 0, 0, time.time()
    while step < a.steps:
        train.set_epoch(epoch)
        for x, y in train:
            if step >= a.steps:
                break
            for group in opt.param_groups:
                group["lr"] = a.lr * 0.5 * (1 + math.cos(math.pi * step / a.steps))
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(x), y, label_smoothing=a.ls).backward()
            opt.step()
            step += 1
        epoch += 1
    seconds = time.time() - t0
    acc = evaluate(net.eval(), test)
    print(json.dumps({**vars(a), "acc": acc.top1, "train_s": round(seconds, 1)}), flush=True)


if __name__ == "__main__":
    main()
