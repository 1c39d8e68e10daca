"""Shared leaves every stage reaches: rules, files, devices, progress, provenance, MLflow tracking, storage URIs, report helpers."""
