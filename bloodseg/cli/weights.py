"""``bloodseg-weights``: list the shipped models (name, size, model card title), or print one
model's card.

    bloodseg-weights                # the shipped models
    bloodseg-weights count_real     # its model card
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bloodseg-weights",
                                     description=__doc__.splitlines()[0].strip('`" '))
    parser.add_argument("name", nargs="?", help="a shipped model: print its model card")
    args = parser.parse_args(argv)
    from bloodseg.io import CheckpointError
    from bloodseg.weights import listing, model_card

    if args.name is None:
        print(listing())
        return
    try:
        print(model_card(args.name))
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
