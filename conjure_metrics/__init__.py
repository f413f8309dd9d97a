"""conjure_metrics: semantic similarity as a text-to-image diffusion model imagines it."""
