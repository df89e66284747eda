"""A score run: its plan (inputs checked before the model loads), the run (axis by axis from
the registry, the reference once), the memory plan, the composite and the noise floor."""
