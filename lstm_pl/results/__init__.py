"""``python -m lstm_pl.results``: the lab notebook regenerated, every experiment over seeds, its
tables and figures. ``registry`` names the experiments, ``runner`` trains and reads back their runs,
``report`` writes tables and figures (``configs`` reads the settings they take from configs/),
``parity_runs`` the parity section, ``markdown`` splices the sections into RESULTS.md, and
``command`` is the command line."""

from .command import main

__all__ = ["main"]
