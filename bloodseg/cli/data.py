"""``bloodseg-data``: make, fetch and check datasets in the Kaggle layout.

bloodseg-data synthetic --out data/synthetic --train 100 --test 20 --size 256x256 --seed 0
bloodseg-data download --out data/            # kagglehub; or --zip archive.zip offline
bloodseg-data verify "data/BCCD Dataset with mask"
bloodseg-data gallery --out experiments/figures/synthetic_vs_real.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bloodseg.data.kaggle import KAGGLE_HANDLE


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size must look like 256x256 (WxH), got {text!r}"
        ) from None
    if w < 32 or h < 32:
        raise argparse.ArgumentTypeError(f"size must be at least 32x32, got {text!r}")
    return w, h


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bloodseg-data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)

    syn = sub.add_parser("synthetic", help="write a synthetic dataset in the Kaggle layout")
    syn.add_argument("--out", type=Path, required=True)
    syn.add_argument("--train", type=int, default=100)
    syn.add_argument("--test", type=int, default=20)
    syn.add_argument("--size", type=parse_size, default=(256, 256), help="WxH")
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--style", default="mixed", help="bbbc041, bccd or mixed")
    syn.add_argument("--overwrite", action="store_true")

    dl = sub.add_parser("download", help=f"download {KAGGLE_HANDLE} (kagglehub)")
    dl.add_argument("--out", type=Path, default=Path("data"))
    dl.add_argument("--zip", type=Path, default=None, help="unpack a hand-downloaded zip")

    ver = sub.add_parser("verify", help="check a dataset folder; non-zero exit on problems")
    ver.add_argument("root", type=Path)
    ver.add_argument("--color", default="rgb", choices=["rgb", "gray"])

    gal = sub.add_parser("gallery", help="figure: synthetic next to real smears")
    gal.add_argument("--out", type=Path, default=Path("experiments/figures/synthetic_vs_real.png"))
    gal.add_argument("--real", type=Path, default=Path("../shared/data"))
    gal.add_argument("--seed", type=int, default=0)

    args = parser.parse_args(argv)
    from bloodseg.data.bbbc041seg import verify
    from bloodseg.data.kaggle import download
    from bloodseg.io import DataError

    try:
        if args.cmd == "synthetic":
            from bloodseg.data.synthetic import write_dataset

            out = write_dataset(
                args.out,
                args.train,
                args.test,
                size=args.size,
                seed=args.seed,
                style=args.style,
                overwrite=args.overwrite,
            )
            print(f"wrote {args.train} train + {args.test} test images to {out}")
        elif args.cmd == "download":
            print(f"dataset ready at {download(args.out, args.zip)}")
        elif args.cmd == "verify":
            report = verify(args.root, color=args.color)
            print(report.summary())
            return 0 if report.ok else 1
        elif args.cmd == "gallery":
            from bloodseg.report.gallery import make_gallery

            print(f"wrote {make_gallery(args.out, real_root=args.real, seed=args.seed)}")
    except (DataError, FileExistsError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
