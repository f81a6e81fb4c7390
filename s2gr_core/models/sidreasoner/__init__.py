"""SIDReasoner: a causal LM that reads and writes SIDs as tokens, aligned with language by SFT and
taught to reason before it recommends (SIDREASONER.md)."""
