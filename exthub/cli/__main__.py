"""``python -m exthub.cli`` is the same as the ``exthub`` command."""

from exthub.cli.main import app

app()
