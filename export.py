"""Export a checkpoint: python export.py ckpt=PATH format=onnx|torch_export|safetensors [out=PATH] (see neuropde/export.py)."""
import hydra

from neuropde.errors import main_guard


@hydra.main(config_path="conf", config_name="export", version_base="1.3")
@main_guard
def main(cfg):
    from neuropde.export import run
    from neuropde.run import route_lightning_logging

    route_lightning_logging()
    run(cfg)


if __name__ == "__main__":
    main()
