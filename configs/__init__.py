"""Config presets (``load_config('tiny')``), shipped with m3vit as package data."""
