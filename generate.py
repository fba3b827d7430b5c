"""Generate a data set: python generate.py data=ns2d [data.resolution=...] (resumes if interrupted)."""
import logging
import sys

import hydra

from neuropde.errors import UserError


@hydra.main(config_path="conf", config_name="generate", version_base="1.3")
def main(cfg):
    from neuropde.run import generate, route_lightning_logging

    route_lightning_logging()
    try:
        generate(cfg)
    except UserError as err:
        logging.getLogger("neuropde").error(str(err))
        sys.exit(2)


if __name__ == "__main__":
    main()
