"""Generators: their kinds, training and cache, the DDPM servers that fill pools, their placement, fidelity features."""
