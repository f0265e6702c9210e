"""Serving the trained student: `cotpd predict` and the MLflow pyfunc model that takes raw text."""
