"""Where kernel tests put their tensors: CUDA when present, else CPU tensors for the interpreter."""

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRETED = not torch.cuda.is_available()
