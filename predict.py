"""Run a checkpoint: python predict.py ckpt=PATH [data=<name>] [data.resolution=128] [split=test]."""
import logging
import sys

import hydra

from neuropde.errors import UserError


def _data_edits_as_appends(argv: list[str]) -> list[str]:
    # predict.yaml has no data node of its own (the checkpoint carries it), so without `data=<name>`
    # an edit like `data.resolution=128` must be appended to the empty node for Hydra to accept it.
    if any(a.startswith("data=") for a in argv):
        return argv
    return ["+" + a if a.startswith("data.") else a for a in argv]


@hydra.main(config_path="conf", config_name="predict", version_base="1.3")
def main(cfg):
    from neuropde.run import predict

    try:
        predict(cfg)
    except UserError as err:
        logging.getLogger("neuropde").error(str(err))
        sys.exit(2)


if __name__ == "__main__":
    sys.argv = sys.argv[:1] + _data_edits_as_appends(sys.argv[1:])
    main()
