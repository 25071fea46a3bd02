"""``python -m doodl fit -c config.yaml``: the same as the ``doodl`` command."""

from doodl.app.cli import main

if __name__ == "__main__":
    main()
