"""`python train.py ...` at the repository root == `bloodseg-train ...` (see bloodseg/train.py)."""

from bloodseg.train import main

if __name__ == "__main__":
    main()
