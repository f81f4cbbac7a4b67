"""Training the mask model: the run's config (:mod:`.config`), examples made on the fly (:mod:`.examples`),
the loss (:mod:`.losses`), the loop (:mod:`.loop`) and what a run leaves in its folder (:mod:`.state`)."""

from cassette_denoise.training.config import TrainConfig
from cassette_denoise.training.examples import PairConfig
from cassette_denoise.training.loop import train

__all__ = ["PairConfig", "TrainConfig", "train"]
