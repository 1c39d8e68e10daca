"""From MLflow runs to reports: significance, the primary analysis, sample curves, figures, fidelity (E5), CAS."""
