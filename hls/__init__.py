"""The HLS kernel library: header-only C++ (one job per header) and the C-simulation API. A Python package
only so that the sources ship with m3vit (:func:`m3vit.package_dir`); the HLS generator copies them into
each project."""
