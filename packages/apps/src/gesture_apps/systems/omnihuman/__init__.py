"""OmniHuman: an omni-conditions (audio, pose, text, reference image) flow-matching video DiT
over the latents of Wan2.1's 3D causal VAE, distilled to one step with Seaweed-APT."""
