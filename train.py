"""Train a model: python train.py model=sfno data=ns2d [optimizer=...] [key=value ...]  (see README).
The same as the installed console script ``neuropde-train``."""
from neuropde.cli import train

if __name__ == "__main__":
    train()
