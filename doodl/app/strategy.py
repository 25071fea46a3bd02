"""Fan items out over processes without ever averaging one item's gradient with another's.

Lightning's DDP wraps the module in ``DistributedDataParallel``, whose backward all-reduces
gradients across ranks: for DOODL that would mix the gradients of different items. Here each
rank optimizes its own items (``PromptDataModule`` deals them whole batch by whole batch, every
item on exactly one rank), so the module is left unwrapped; the process group is still there for
the few collectives the run needs (stop decision, checkpoint and results gathering).

SIGTERM: Lightning's own handler broadcasts from inside the signal handler, once per signal a
rank receives, so ranks that got a different number of signals (a scheduler signalling the whole
job, rank 0 forwarding it to its children) run mismatched collectives and deadlock. Here the
handler only notes the signal; before every training step the ranks agree (one all-reduce) whether
any rank got one, and then all of them stop at the end of that same step, save ``last.ckpt``
together and exit with status 143, as a single process does.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import torch
from lightning.pytorch.strategies import DDPStrategy


class ItemParallelStrategy(DDPStrategy):
    """DDP processes and launchers (torchrun, SLURM, subprocess) with no gradient synchronization."""

    strategy_name = "ddp_items"
    _sigterm_noted = False

    def configure_ddp(self) -> None:
        """Keep the LightningModule as it is: no DistributedDataParallel wrapper."""

    def on_train_start(self) -> None:
        """Replace Lightning's SIGTERM handler (registered just before training) by one that only notes it."""
        super().on_train_start()
        self._sigterm_noted = False
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._note_sigterm)  # Lightning's teardown restores the original

    def _note_sigterm(self, signum: int, frame: Any) -> None:
        self._sigterm_noted = True

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        """Agree with the other ranks whether any got SIGTERM, then run the step (every rank takes
        the same number of steps: ``ItemSampler``). If one did, every rank's trainer now has
        ``received_sigterm`` set, so all raise Lightning's ``SIGTERMException`` after this step."""
        if self.world_size > 1 and torch.distributed.is_initialized():
            flag = torch.tensor([int(self._sigterm_noted)], device=self.root_device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            if flag.item():
                # the flag Lightning's loops check at the end of a step; it offers no public setter
                self.lightning_module.trainer._signal_connector.received_sigterm = True
        return super().training_step(*args, **kwargs)
