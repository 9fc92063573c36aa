"""Byte-level text data."""

from .bytes import ByteCorpus, builtin_corpus_text, load_text

__all__ = ["ByteCorpus", "builtin_corpus_text", "load_text"]
