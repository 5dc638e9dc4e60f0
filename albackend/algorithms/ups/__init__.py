"""Unlabeled pool subsampling (paper section 4.2)."""
