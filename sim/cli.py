"""Command-line helper shared by every entry point (DESIGN.md: bad values exit with status 2
and one clear line)."""

from __future__ import annotations

import argparse


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr and exit status 2 (no usage dump)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")
