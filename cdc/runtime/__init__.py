"""The runtime: pipeline loop, delivery tracking, outputs, supervisor, health and metrics."""
