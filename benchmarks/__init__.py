"""Scripts printing speed ratios measured side by side in one run (docs/formats.md)."""
