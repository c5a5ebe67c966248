"""Example models for the model-build pipeline (see each folder's script)."""
