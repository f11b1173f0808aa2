"""One folder per op: the public function with its ``torch.library`` registration and autograd in
the folder's ``__init__``, beside ``naive.py`` (oracle / baseline), ``reference.py`` (plain-PyTorch
backend), ``triton.py`` (Triton kernels and launchers) and ``extension.py`` (the compiled ``_C``)."""
