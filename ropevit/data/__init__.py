"""Generators of small data sets in real COCO / ADE20k formats (demo and tests)."""
