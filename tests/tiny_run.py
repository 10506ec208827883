"""A model and config small enough to train 3 epochs in about a second (reliability tests)."""

from torch import nn

from senet.models.registry import list_models, register_model
from senet.train import load_config

NAME = "test_rundir_linear"
TIMING = ("time_s", "images_per_s")


class _Linear(nn.Module):
    def __init__(self, num_classes: int = 10, in_chans: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(in_chans * 8 * 8, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


if NAME not in list_models():
    register_model(NAME, _Linear, family="test", description="linear classifier (reliability tests)",
                   input_size=(3, 8, 8))

SETTINGS = [f"model.name={NAME}", "model.overrides={}", "data.dataset=synthetic:96:3x8x8", "batch_size=32",
            "eval_batch_size=50", "optim.lr=0.05", "schedule.name=cosine", "epochs=3",
            "threads=1"]  # the same float results in this process and in the killed subprocesses


def tiny_config(*extra: str):
    return load_config("bundled", SETTINGS + list(extra))


def untimed(rows):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]
