"""Run a checkpoint: python predict.py ckpt=PATH [data=<name>] [data.resolution=128] [split=test] [refine=true] [assimilate=true]."""
import logging
import sys

import hydra

from neuropde.errors import UserError


def _shorthands(argv: list[str]) -> list[str]:
    """Rewrite the two shorthands of this script into plain Hydra overrides.

    - predict.yaml has no data node of its own (the checkpoint carries it), so without `data=<name>`
      an edit like `data.resolution=128` is appended to the empty node (`+data.resolution=128`).
    - `refine=true|false` means `refine.enabled=true|false` (`refine` is a config node of settings);
      the same for `assimilate=true|false`.
    """
    swap = any(a.startswith("data=") for a in argv)
    out = []
    for a in argv:
        if a.startswith("data.") and not swap:
            a = "+" + a
        elif a.lower() in ("refine=true", "refine=false", "assimilate=true", "assimilate=false"):
            name, value = a.split("=", 1)
            a = f"{name.lower()}.enabled={value.lower()}"
        out.append(a)
    return out


@hydra.main(config_path="conf", config_name="predict", version_base="1.3")
def main(cfg):
    from neuropde.run import predict

    try:
        predict(cfg)
    except UserError as err:
        logging.getLogger("neuropde").error(str(err))
        sys.exit(2)


if __name__ == "__main__":
    sys.argv = sys.argv[:1] + _shorthands(sys.argv[1:])
    main()
