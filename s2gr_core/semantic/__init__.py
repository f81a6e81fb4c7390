"""The semantic foundation (METHOD.md §3): item text embeddings, the co-occurrence graph,
the CoBa RQ-VAE codebook and the Semantic IDs built from it."""
