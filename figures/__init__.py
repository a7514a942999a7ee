"""Result files: how every command writes them and reads them back, and the plots and tables
rebuilt from them (`python -m figures [DIR ...]`).

The bottom of the project's dependency graph: ``sim`` and ``llm`` import it, it imports
neither (tests/test_layout.py). So it also holds what every command shares: ``cli`` (the
one-line-error argument parser, docs/formats.md) and ``files`` (atomic writes, completeness
markers, checked reads, the parts/ folder that makes long commands resumable).
"""
