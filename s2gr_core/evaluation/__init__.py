"""Evaluation: the common prediction format, ranking metrics, paired comparison, reports."""
