"""Semantic Gesticulator (SIGGRAPH 2024): rhythmic gestures from an RVQ-VAE and one GPT per RVQ
layer, semantic gestures retrieved for the words and injected at their time.

Training: ``gesture train semantic-gesticulator rvq|coarse|fine`` (:mod:`.train`); generation:
``gesture generate --checkpoint RUN --audio x.wav [--textgrid] [--seg-dir] [--llm-url]``
(:mod:`.pipeline`); :mod:`.injection` and :mod:`.inventory` are its pure parts; retrieval and
transcripts live in :mod:`.retrieval` and :mod:`.transcripts`.
"""
