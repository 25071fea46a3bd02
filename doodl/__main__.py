"""``python -m doodl fit -c config.yaml``: the same as the ``doodl`` command."""

from doodl.app.cli import console

if __name__ == "__main__":
    raise SystemExit(console())
