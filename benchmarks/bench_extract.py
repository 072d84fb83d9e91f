"""The region extractor with the full-size ResNet-101 detector (random weights): images/s and where the time goes.

Runs ``RegionExtractor`` on a few photo-sized images (the bundled astronaut crop, resized to
640x480, then flipped and cropped for variety; each is resized to 600x800 inside) and reports, per
image, the stages side by side: backbone (stem..res4), RPN (anchors, top-k, NMS), RoI head (RoIPool
14x14 + res5 on 300 proposals + predictors) and selection (box decoding, NMS loop, attributes), plus
the end-to-end images/s of ``extract`` (decode + preprocess + detector). Wall-clock seconds: note the
machine's load (``uptime``) with any number you record.

    python benchmarks/bench_extract.py                    # CPU, 3 images, torch's default threads
    python benchmarks/bench_extract.py --images 5 --threads 2
    python benchmarks/bench_extract.py --device cuda --images 20 --batch-size 4 --pad-batch
    python benchmarks/bench_extract.py --memory 10000    # tiny detector, folder run: RSS over time

``--memory N`` writes N small PNGs to a temporary folder and runs ``extract_folder`` with the tiny
detector (same code path), printing the process's resident memory after every tenth of the images:
flat memory means the numbers stop growing after the first batches.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from switchbert.data.extract import DetectorConfig, ExtractConfig, RegionExtractor, random_detector
from switchbert.data.extract.preprocess import make_batch

PHOTO = Path(__file__).parents[1] / "tests" / "fixtures" / "astronaut_crop.jpg"


def _images(n: int) -> list[np.ndarray]:
    base = np.asarray(Image.open(PHOTO).convert("RGB").resize((640, 480), Image.BILINEAR))[:, :, ::-1]
    out = []
    for i in range(n):
        im = base[:, ::-1] if i % 2 else base
        out.append(np.ascontiguousarray(im[: 480 - 8 * i, : 640 - 12 * i]))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def memory_run(n: int) -> None:
    import tempfile

    from switchbert.data.extract import TINY_DETECTOR
    from switchbert.data.extract.pipeline import Progress, extract_folder

    run = ExtractConfig(min_size=96, max_size=160, min_boxes=10, max_boxes=36)
    ex = RegionExtractor(model=random_detector(TINY_DETECTOR), config=run)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        base = Image.open(PHOTO).convert("RGB")
        for i in range(n):
            base.rotate(i % 360).save(folder / f"{i:06d}.png")
        marks = {max(1, n * k // 10) for k in range(1, 11)}

        class Probe(Progress):
            def update(self, k: int, skipped: int, force: bool = False) -> None:
                before = self.already + self.done_now
                super().update(k, skipped, force)
                if any(before < m <= self.already + self.done_now for m in marks):
                    print(f"{self.already + self.done_now:>7} images: RSS {_rss_mb():7.1f} MB", flush=True)

        t = time.perf_counter()
        extract_folder(folder, ex, Path(tmp) / "store", progress=Probe(n, 0, interval=1e9), batch_size=8)
        print(f"{n} images in {time.perf_counter() - t:.0f} s; RSS after writing the store {_rss_mb():.1f} MB")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--pad-batch", action="store_true", help="one padded tensor per batch (GPU throughput)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--memory", type=int, default=0, metavar="N", help="memory run over N images (tiny detector)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory:
        memory_run(args.memory)
        return
    device = torch.device(args.device)
    run = ExtractConfig(pad_batch=args.pad_batch)
    model = random_detector(DetectorConfig(), seed=0).to(device)
    images = _images(args.images)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load {os.getloadavg()[0]:.2f} (1-min average)")

    # stages, one image at a time
    stages = {"backbone": 0.0, "rpn": 0.0, "roi_head": 0.0, "selection": 0.0}
    with torch.no_grad():
        for im in images:
            x, sizes, raws = make_batch([im], run, device)
            t0 = time.perf_counter()
            feats = model.backbone(x)
            _sync(device)
            t1 = time.perf_counter()
            props = model.proposal_generator(feats, sizes, run)
            _sync(device)
            t2 = time.perf_counter()
            pooled = model.roi_heads.pooled_features(feats, props)
            logits, deltas, attr = model.roi_heads.box_predictor(pooled)
            _sync(device)
            t3 = time.perf_counter()
            model._select(feats, props[0], pooled, logits, deltas, attr, sizes[0], raws[0], run)
            _sync(device)
            t4 = time.perf_counter()
            for k, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                stages[k] += dt
    total = sum(stages.values())
    print("stage        s/image   share")
    for k, v in stages.items():
        print(f"{k:<12} {v / len(images):7.2f}   {100 * v / total:4.0f}%")

    ex = RegionExtractor(model=model, config=run, device=device)
    t = time.perf_counter()
    recs = ex.extract(images, batch_size=args.batch_size)
    _sync(device)
    dt = time.perf_counter() - t
    print(f"end to end: {len(images)} images in {dt:.1f} s = {len(images) / dt:.3f} images/s "
          f"({sum(r.num_regions for r in recs) / len(recs):.0f} regions/image, batch {args.batch_size}, "
          f"pad_batch {args.pad_batch}); load now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
