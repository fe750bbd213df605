"""The speed model: steady-state timing of a run, and time per frame predicted per device kind
(image encoder once per frame + per object tracking + host work), fitted on recorded runs."""
