"""The shipped trained tiny model and its accuracy report, shipped with m3vit as package data."""
