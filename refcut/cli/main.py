"""The ``refcut`` command line. Each verb lives in its own module with a ``register(app)``."""

from __future__ import annotations

import typer

from refcut.cli import annotate, episodes, evaluate, label_studio, models, train

app = typer.Typer(add_completion=False, no_args_is_help=True, help="RefCut: interactive segmentation with a reference.")

for module in (models, episodes, evaluate, train, annotate, label_studio):
    module.register(app)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
