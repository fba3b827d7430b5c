"""Train a model: python train.py model=sfno data=ns2d [optimizer=...] [key=value ...]  (see README)."""
import hydra

from neuropde.errors import main_guard


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
@main_guard
def main(cfg):
    from neuropde.run import route_lightning_logging, train

    route_lightning_logging()
    return train(cfg).get("test/rel_l2")  # the value a sweeper (Optuna, say) minimises


if __name__ == "__main__":
    main()
