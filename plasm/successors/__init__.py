"""Successor models of any type: HF encoders and classical models trained from scratch."""
