"""``doodl fit -c config.yaml`` (and ``predict``, ``test``): the command line of doodl.

``main`` builds the LightningCLI (``doodl.app.lightning_cli.DOODLCLI``) and raises what it raises,
for tests and library use. ``console`` is the ``doodl`` command: its own short help before any
heavy import, user errors as one line ``doodl: error: ...`` with exit status 2 (the parser's own
form; ``DOODL_TRACEBACK=1`` adds the traceback), 130 after Ctrl-C, 143 after SIGTERM, 1 when an
item failed. This module imports no heavy library itself.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

from .errors import is_user_error, mark_before_run, one_line

SUBCOMMANDS = ("fit", "predict", "test", "compare")

HELP = """\
usage: doodl {fit,predict,test,compare} [-c CONFIG.yaml] [--section.option VALUE ...]

DOODL: optimize the diffusion latents of every item (prompt x seed) of a prompt file toward a
guidance loss (Wallace et al., ICCV 2023).

subcommands:
  fit      optimize the items' latents: RUN/final/*.png, results.csv, checkpoints/last.ckpt
  predict  the unguided sample or the one-step baseline of the same items (--model.predict_method)
  test     score the images a run saved (--model.eval_dir RUN/final): RUN/test/results.csv
  compare  methods x items on the same seeds, judged by held-out judges: OUT/summary.md, .csv, .png

examples:
  doodl fit -c configs/digits.yaml
  doodl fit -c configs/digits.yaml --ckpt_path RUN/checkpoints/last.ckpt   # resume
  doodl fit -c configs/digits.yaml --print_config                          # the resolved config
  doodl fit --help                                                         # every option of fit
  doodl compare -c configs/digits_compare.yaml                             # DOODL vs baselines

The run folder is printed at the start and the end of a run. A user error prints one line
(DOODL_TRACEBACK=1: with its traceback) and exits with status 2; Ctrl-C stops after the
current step, saves last.ckpt and exits with status 130.
"""


def __getattr__(name: str) -> Any:  # the Lightning classes, imported on first use
    if name in ("DOODLCLI", "RunConfig", "TRAINER_DEFAULTS"):
        from . import lightning_cli

        return getattr(lightning_cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(args: list[str] | None = None, run: bool = True) -> Any:
    """Build and run the CLI; tests call ``main(["fit", "-c", "tests/conf/x.yaml"])``.

    Exceptions propagate; those raised before the run's first step are marked so that ``console``
    can tell a user error from a bug (``doodl.app.errors``). A run stopped by SIGTERM saves
    ``last.ckpt`` and raises ``SystemExit(143)`` (128 + SIGTERM), by Ctrl-C ``SystemExit(130)``,
    so that schedulers see an interrupted job, not a finished one.
    """
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from .data import PromptDataModule
    from .lightning_cli import TRAINER_DEFAULTS, DOODLCLI, DOODLArgumentParser, RunConfig
    from .module import DOODL
    from .quiet import quiet_warnings
    from .run_guard import RunGuard

    import torch

    guard = RunGuard()
    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")  # --threads changes both
    try:
        with quiet_warnings():
            return DOODLCLI(
                DOODL, PromptDataModule, args=args, run=run, trainer_defaults={**TRAINER_DEFAULTS, "callbacks": [guard]},
                save_config_callback=RunConfig, auto_configure_optimizers=False, parser_class=DOODLArgumentParser,
            )
    except SIGTERMException as e:
        raise SystemExit(130 if guard.interrupted else 143) from e
    except SystemExit as e:
        if isinstance(e.__context__, KeyboardInterrupt):  # Lightning's own Ctrl-C handling ends in sys.exit(1)
            raise SystemExit(130) from e
        raise
    except BaseException as e:
        if not guard.started:
            mark_before_run(e)
        raise
    finally:  # a caller in the same process (a notebook, the tests) keeps its own thread setting
        torch.set_num_threads(threads)
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp


def quick_answer(argv: list[str]) -> tuple[str, int, Any] | None:
    """What ``doodl`` answers without importing Lightning: (text, exit status, stream), or None."""
    if not argv:
        return HELP, 2, sys.stderr
    if argv[0] in ("-h", "--help"):
        return HELP, 0, sys.stdout
    if not argv[0].startswith("-") and argv[0] not in SUBCOMMANDS:
        hint = " (it has no validation step)" if argv[0] == "validate" else ""
        return f"doodl: error: unknown subcommand {argv[0]!r}{hint}: use one of {', '.join(SUBCOMMANDS)} (doodl --help)\n", 2, sys.stderr
    return None


def console(args: list[str] | None = None) -> int:
    """The ``doodl`` console script (and ``python -m doodl``): the exit status of the run."""
    argv = list(sys.argv[1:] if args is None else args)
    quick = quick_answer(argv)
    if quick is not None:
        text, status, stream = quick
        stream.write(text)
        return status
    try:
        if argv[0] == "compare":
            from .compare_cli import console_compare

            return console_compare(argv[1:])
        cli = main(args)  # None: Lightning reads sys.argv itself
    except KeyboardInterrupt:
        print("\ndoodl: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if not is_user_error(e):
            raise
        if os.environ.get("DOODL_TRACEBACK") == "1":
            traceback.print_exc()
        print(one_line(e), file=sys.stderr)
        return 2
    return failed_status(cli)


def failed_status(cli: Any) -> int:
    """1 (after saying so) when the module counted failed items (``DOODL.n_failed``) after fit, else 0."""
    n_failed = int(getattr(getattr(cli, "model", None), "n_failed", 0) or 0)
    if getattr(cli, "subcommand", None) != "fit" or n_failed <= 0:
        return 0
    dm = getattr(cli, "datamodule", None)
    total = len(getattr(dm, "items", []) or [])
    print(f"doodl: {n_failed} of {total} items failed (see results.csv)", file=sys.stderr)
    return 1
