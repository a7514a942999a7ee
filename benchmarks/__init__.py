"""Scripts printing speed ratios measured side by side in one run (DESIGN.md)."""
