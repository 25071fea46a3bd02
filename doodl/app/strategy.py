"""Fan items out over processes without ever averaging one item's gradient with another's.

Lightning's DDP wraps the module in ``DistributedDataParallel``, whose backward all-reduces
gradients across ranks: for DOODL that would mix the gradients of different items. Here each
rank optimizes its own items (``PromptDataModule`` shards them, every item on exactly one rank),
so the module is left unwrapped; the process group is still there for the few collectives the
run needs (stop decision, checkpoint and results gathering).
"""

from __future__ import annotations

from lightning.pytorch.strategies import DDPStrategy


class ItemParallelStrategy(DDPStrategy):
    """DDP processes and launchers (torchrun, SLURM, subprocess) with no gradient synchronization."""

    strategy_name = "ddp_items"

    def configure_ddp(self) -> None:
        """Keep the LightningModule as it is: no DistributedDataParallel wrapper."""
