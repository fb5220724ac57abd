import torch

# The test models are tiny: one intra-op thread is 5-10x faster than two on a shared 2-core
# machine, where OpenMP workers wait on cores that other processes hold.
torch.set_num_threads(1)
