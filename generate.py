"""Generate a data set: python generate.py data=ns2d [data.resolution=...] (resumes if interrupted)."""
import hydra

from neuropde.errors import main_guard


@hydra.main(config_path="conf", config_name="generate", version_base="1.3")
@main_guard
def main(cfg):
    from neuropde.run import generate, route_lightning_logging

    route_lightning_logging()
    generate(cfg)


if __name__ == "__main__":
    main()
