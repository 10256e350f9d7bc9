"""DPA-2 fine-tuning of an N-member ensemble through deepmd-kit (PyTorch backend)."""
