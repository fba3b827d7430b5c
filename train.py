"""Train a model: python train.py model=sfno data=ns2d [optimizer=...] [key=value ...]  (see README)."""
import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from neuropde.errors import UserError


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg):
    from neuropde.run import train, route_lightning_logging

    route_lightning_logging()

    try:
        return train(cfg).get("test/rel_l2")
    except UserError as err:
        logging.getLogger("neuropde").error(str(err))
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return None  # one job of a sweep (a diverging learning rate, say) does not end the others
        sys.exit(2)


if __name__ == "__main__":
    main()
