"""PLASM: pseudo-labeling for acquisition-successor mismatch (paper section 4.1)."""
