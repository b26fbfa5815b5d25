"""`python train.py ...` at the repository root == `bloodseg-train ...` (bloodseg/cli/train.py)."""

from bloodseg.cli.train import main

if __name__ == "__main__":
    main()
