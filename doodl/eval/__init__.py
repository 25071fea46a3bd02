"""Evaluation: statistics with confidence intervals, the digits world's scorers (guide, judge,
tiny CLIP, KID/FID on the judge's features) and report writers (markdown table, bar chart).
Nothing is loaded at import."""
