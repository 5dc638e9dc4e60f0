"""The AL emulation behind ``python bench/emulate.py`` (see docs/emulation.md).

Modules: ``data`` (datasets -> Examples), ``learners`` (HF / classical models behind one interface),
``plasm_adapter`` (PLASM pipeline as a successor), ``loop`` (the protocol for one seed), ``metrics`` (test
metric, Table 1 statistic), ``config`` (settings, presets, profiles), ``runner`` (seeds, files), ``report``
(aggregates, Markdown), ``plots`` (PNG).
"""
