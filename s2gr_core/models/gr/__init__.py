"""Generative retrieval over Semantic IDs (TIGER / S2GR): decoding and, later, the seq2seq model."""
