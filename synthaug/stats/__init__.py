"""Statistics over plain arrays: paired tests and intervals, p-values, two-way inference, curve fits."""
