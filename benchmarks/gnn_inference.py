"""Inference throughput of the CNN2GNN student (`gnn2`, both graph modes, and its k = 0 MLP) against its
ResNet-152 teacher, on digits-size input, at one batch size on CPU. Ratios come from one process, one run.

    python benchmarks/gnn_inference.py                 # batch 256, 1 torch thread, digits at 16 px
    python benchmarks/gnn_inference.py --threads 2 --image-size 32

Weights are untrained: the cost of these models does not depend on their values. The time per batch is the best
of `--repeats` timed passes after one warm-up (kdbench.train.evaluate.inference_time_per_image, as in the run records),
which suppresses noise from other processes on a shared machine.
"""

from __future__ import annotations

import argparse

import torch

from kdbench.data.registry import build_dataset, get_dataset_spec
from kdbench.models import count_parameters, count_weight_layers, create_model
from kdbench.train.evaluate import inference_time_per_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--image-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--teacher", default="resnet152")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    spec = get_dataset_spec("digits")
    data = build_dataset("digits", spec.params.__class__(image_size=args.image_size), augment="none")
    test_images = torch.stack([data.test[i][0] for i in range(len(data.test))])
    example = test_images.repeat((args.batch_size + len(test_images) - 1) // len(test_images), 1, 1, 1)
    example = example[: args.batch_size]
    shape = dict(num_classes=data.num_classes, in_chans=data.in_chans, image_size=data.image_size)

    models = {
        f"{args.teacher} (teacher)": create_model(args.teacher, **shape),
        "gnn2 batch (k=10)": create_model("gnn2", graph="batch", **shape),
        "gnn2 anchor (k=10, m=256)": create_model("gnn2", graph="anchor", **shape),
        "gnn2 k=0 (MLP)": create_model("gnn2", k=0, **shape),
    }
    device = torch.device("cpu")
    rows = []
    for name, model in models.items():
        s = inference_time_per_image(model, example, device, repeats=args.repeats)
        rows.append((name, count_weight_layers(model), count_parameters(model), 1.0 / s))
    teacher_rate = rows[0][3]

    print(f"digits {args.image_size}px, batch {args.batch_size}, CPU, {args.threads} thread(s), "
          f"best of {args.repeats}")
    print(f"{'model':<28}{'layers':>7}{'params':>12}{'images/s':>12}{'× teacher':>11}")
    for name, layers, params, rate in rows:
        print(f"{name:<28}{layers:>7}{params / 1e6:>11.2f}M{rate:>12,.0f}{rate / teacher_rate:>10.1f}×")


if __name__ == "__main__":
    main()
