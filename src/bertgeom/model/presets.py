"""Model presets: BERT sizes from a unit-test toy to the paper's BERT-base shape."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Preset:
    """Architecture and optimisation defaults of one preset."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    epochs: int
    batch_size: int
    learning_rate: float

    def architecture(self) -> dict[str, int]:
        """The ``BertConfig`` keyword arguments of this preset."""
        fields = asdict(self)
        return {
            key: fields[key]
            for key in (
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "intermediate_size",
            )
        }


PRESETS: dict[str, Preset] = {
    # For tests: trains in seconds, learns little.
    "tiny": Preset(32, 1, 2, 64, epochs=1, batch_size=16, learning_rate=2e-3),
    # The default and the shipped model's architecture: fast on a laptop CPU, >0.99 macro-F1 on
    # real spikes. 10 epochs at batch 32 and 5e-3 scored real test macro-F1 1.0000 on one run
    # and 0.9737 on another (another dropout stream): fewer epochs are not robust (BENCHMARKS.md).
    "small": Preset(64, 2, 4, 256, epochs=15, batch_size=16, learning_rate=3e-3),
    # Twice small's layers and heads at its width: the second recipe of the case study over
    # seeds (docs/findings.md, benchmarks/findings_seeds.py); a training step costs about 2.7x
    # small's on 2 cores (BENCHMARKS.md, "Findings over seeds"). Small's epochs, batch and
    # learning rate, not tuned for this depth.
    "deep": Preset(64, 4, 8, 256, epochs=15, batch_size=16, learning_rate=3e-3),
    # The paper's shape (BERT-base: 12 layers, 12 heads, hidden 768); slow on a CPU.
    "paper": Preset(768, 12, 12, 3072, epochs=2, batch_size=4, learning_rate=2e-5),
}
