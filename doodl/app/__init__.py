"""The Lightning application: prompt data, the DOODL LightningModule, callbacks, ``doodl`` CLI.

Names are imported lazily, so ``import doodl.app`` stays cheap.
"""

__all__ = ["DOODL", "PromptDataModule", "ItemParallelStrategy", "main"]


def __getattr__(name: str):
    if name == "DOODL":
        from .module import DOODL
        return DOODL
    if name == "PromptDataModule":
        from .data import PromptDataModule
        return PromptDataModule
    if name == "ItemParallelStrategy":
        from .strategy import ItemParallelStrategy
        return ItemParallelStrategy
    if name == "main":
        from .cli import main
        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
