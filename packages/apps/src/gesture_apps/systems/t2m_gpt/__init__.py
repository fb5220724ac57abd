"""Utterance-to-Motion: T2M-GPT (VQ-VAE + GPT) from captions or Korean utterances.

The VQ-VAE trains through ``gesture train tokenizer --preset tokenizer/t2m_gpt``, the GPT
through ``gesture train t2m-gpt --tokenizer DIR --data DIR``; :mod:`.pipeline` generates
HumanML3D features from a bundle (``gesture generate --bundle DIR --text ...``).
"""
