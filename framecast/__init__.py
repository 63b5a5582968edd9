"""Framecast: a self-hosted image-to-video server that speaks fal's and WaveSpeed's wire protocols."""

__version__ = "0.1.0"
