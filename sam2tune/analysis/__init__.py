"""Analysis of the results table: derived columns, plots, computed conclusions, reports."""
