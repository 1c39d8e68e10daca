"""One trial: compose its images, train and evaluate its classifier; what a trial costs (throughput rows, pricing)."""
