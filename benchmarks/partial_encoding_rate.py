"""Images/s of the frozen trunk of partial fine-tuning (what ``trainable_blocks`` caches).

    python benchmarks/partial_encoding_rate.py [--data PATH] [--images 768] [--trainable-blocks 2]

Runs EfficientNet-Lite0's frozen stages (224 px, all but the last ``--trainable-blocks``) over
HAM10000 images for two views, without the cache, as ``FusionNetClassifier`` does when it fills
it, and prints the rate and the time of ``--views`` views of the whole share.
"""

from __future__ import annotations

import argparse
import os
import time

from skinfuse._nn.modules import ClassifierNetwork
from skinfuse._nn.partial import split_network, view_activations
from skinfuse.datasets import load_ham10000


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default=os.environ.get("SKINFUSE_DATA", "../shared/data/ham10000"))
    p.add_argument("--images", type=int, default=768)
    p.add_argument("--trainable-blocks", type=int, default=2)
    p.add_argument("--views", type=int, default=4, help="views of the share to cost")
    args = p.parse_args(argv)
    ham = load_ham10000(args.data)
    items = list(ham.data["image_path"].iloc[: args.images])
    net = ClassifierNetwork("efficientnet_lite0", n_classes=7, image_size=224)
    trunk, _, _ = split_network(net, args.trainable_blocks, 224)

    def fill(its, encode, _view, *, out, keep):  # no cache: every image encoded
        out[:] = encode(its)

    def run(todo, view):
        with view_activations(
            todo, trunk, [view], cached=fill, image_size=224, batch_size=128, device="cpu"
        ):
            pass

    run(items[:64], "identity")  # warm-up
    for view in ("identity", "rot90"):
        start = time.perf_counter()
        run(items, view)
        rate = len(items) / (time.perf_counter() - start)
        total = args.views * len(ham.data) / rate / 60
        print(
            f"{view}: {rate:.1f} images/s -> {args.views} views x {len(ham.data)}: {total:.1f} min"
        )


if __name__ == "__main__":
    main()
