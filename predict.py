"""Run a checkpoint: python predict.py ckpt=PATH [data=<name>] [data.resolution=128] [split=test] [refine=true] [assimilate=true].
The same as the installed console script ``neuropde-predict``."""
from neuropde.cli import predict

if __name__ == "__main__":
    predict()
