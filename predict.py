"""Run a checkpoint: python predict.py ckpt=PATH [data=<name>] [data.resolution=128] [split=test] [refine=true] [assimilate=true]."""
import sys

import hydra

from neuropde.errors import main_guard
from neuropde.run import predict_shorthands


@hydra.main(config_path="conf", config_name="predict", version_base="1.3")
@main_guard
def main(cfg):
    from neuropde.run import predict, route_lightning_logging

    route_lightning_logging()
    predict(cfg)


if __name__ == "__main__":
    sys.argv = sys.argv[:1] + predict_shorthands(sys.argv[1:])
    main()
