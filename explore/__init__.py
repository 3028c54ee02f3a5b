"""Exploration above the simulators: design-space exploration, MoE schedules, performance and RTL
reports, and benchmarks (docs/performance.md)."""
