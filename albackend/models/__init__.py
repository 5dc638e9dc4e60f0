"""torch/transformers layer: model loading, training, scoring. Importing it changes nothing process-wide; entry
points call :func:`albackend.models.runtime.configure_runtime` once."""
