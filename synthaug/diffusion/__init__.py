"""Diffusion generators: the DDPM network and files (ddpm), its resumable training (training),
per-image-seeded sampling (sampling), pretrained ImageNet pipelines (imagenet). Import from the
modules; diffusers itself is imported only where a network is built, loaded or sampled."""
