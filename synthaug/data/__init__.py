"""Real images: sources and their cache, the long tail, the validation split, a trial's mix of real and synthetic images."""
