"""The content-addressed store of synthetic images (store), and pools that travel between caches."""
