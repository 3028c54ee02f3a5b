"""The RTL MoE unit: SystemVerilog sources and templates, shipped with m3vit as package data."""
