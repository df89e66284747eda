"""Bundled prompt sets (data only).

``refract-prompts-v1.jsonl`` is refract's own prompt set, written for this project and
dedicated to the public domain (CC0). Load it with :func:`refract.inputs.promptset.load_prompts`.
"""
