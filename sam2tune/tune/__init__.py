"""Budget tuner (Optuna), recommendations, GPU catalog and per-GPU lookup table."""
