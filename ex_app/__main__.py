"""``python -m ex_app`` runs the ``recognize`` command."""

from ex_app.cli import main

main()
