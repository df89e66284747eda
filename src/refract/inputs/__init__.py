"""What a score reads: the model file (GGUF checks), corpora, prompt sets, chat templates, and
the provenance (hashes) of all of them."""
