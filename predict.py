"""Run a checkpoint: python predict.py ckpt=PATH [data=<name>] [data.resolution=128] [split=test] [refine=true] [assimilate=true]."""
import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from neuropde.errors import UserError
from neuropde.run import predict_shorthands


@hydra.main(config_path="conf", config_name="predict", version_base="1.3")
def main(cfg):
    from neuropde.run import predict, route_lightning_logging

    route_lightning_logging()

    try:
        predict(cfg)
    except UserError as err:
        logging.getLogger("neuropde").error(str(err))
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return  # one bad checkpoint of a sweep (ckpt=a,b,c) does not end the others
        sys.exit(2)


if __name__ == "__main__":
    sys.argv = sys.argv[:1] + predict_shorthands(sys.argv[1:])
    main()
