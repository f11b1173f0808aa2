"""One folder per op: the public function with its ``torch.library`` registration and autograd in
the folder's ``__init__``, beside ``naive.py`` (the oracle ``naive_<op>`` and the authors'-style baseline
``eager_<op>``, the "eager" backend), ``reference.py`` (the "reference" backend: plain PyTorch tensor
algebra, float64 capable), ``triton.py`` (Triton kernels and launchers) and ``extension.py`` (the
compiled ``_C``). ``_common.py`` holds what the folders share."""
