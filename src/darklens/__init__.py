"""darklens: find and measure dark-matter substructure in strong gravitational lensing images."""

__version__ = "0.1.0"
