import os

import torch

# Without a GPU the Triton kernels run in Triton's interpreter, which must be chosen before triton is imported
# (anything may import it: transformers, torch's compiler); every test session sets it first.
if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')
