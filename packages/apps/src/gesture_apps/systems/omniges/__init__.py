"""Omniges: any-to-any text, audio and gesture generation in one MMDiT (OmniFlow's recipe with
the image stream replaced by four-part RVQ gesture latents)."""
