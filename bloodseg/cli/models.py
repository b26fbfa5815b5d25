"""``bloodseg-models``: the parameter counts of the registered networks.

The ``conf/model`` defaults, randomly initialised, for gray
(``in_channels=1``) and RGB (``in_channels=3``) input.
"""

from __future__ import annotations

import argparse

from bloodseg.config import group_names


def parameter_counts(names: list[str]) -> dict[str, tuple[int, int]]:
    """``{name: (gray_params, rgb_params)}``."""
    from bloodseg.models import build_model

    counts = {}
    for name in names:
        gray, rgb = (build_model(name, in_channels=c).num_parameters() for c in (1, 3))
        counts[name] = (gray, rgb)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bloodseg-models",
                                     description="the parameter counts of the networks")
    parser.add_argument("names", nargs="*", default=group_names("model"),
                        help="models (default: all)")
    args = parser.parse_args(argv)
    from bloodseg.models import model_class

    header = f"{'model':<10} {'class':<14} {'gray (1 ch)':>14} {'rgb (3 ch)':>14} {'rgb (M)':>8}"
    print(header)
    print("-" * len(header))
    for name, (gray, rgb) in parameter_counts(args.names).items():
        cls = model_class(name).__name__
        print(f"{name:<10} {cls:<14} {gray:>14,} {rgb:>14,} {rgb / 1e6:>8.2f}")


if __name__ == "__main__":
    main()
