"""Export a checkpoint: python export.py ckpt=PATH format=onnx|torch_export|safetensors [out=PATH]
(see neuropde/export.py). The same as the installed console script ``neuropde-export``."""
from neuropde.cli import export

if __name__ == "__main__":
    export()
