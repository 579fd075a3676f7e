"""Keys: the model and its lifecycle, the registry (database), the key service (HSM)."""
