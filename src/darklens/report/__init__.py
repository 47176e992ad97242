"""Figures and reports (matplotlib): galleries, curves, the HTML report."""
