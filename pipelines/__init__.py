"""Kubeflow Pipelines v2: the evolution pipeline, its thin components, compile and local runs."""
