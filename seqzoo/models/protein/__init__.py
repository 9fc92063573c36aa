"""Protein models, one module per paper (e.g. :mod:`seqzoo.models.protein.tranception`)."""
