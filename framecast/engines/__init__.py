"""Model engines. Only the worker's engine process imports the torch-backed modules here."""
