"""``python -m lstm_pl.results``: see ``lstm_pl.results.command``."""

from . import main

main()
