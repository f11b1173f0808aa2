"""A loop-by-loop NumPy float64 implementation of the op, independent of the package's code.

Used to pin down the semantics (threshold ties, eps rule) for the reference itself.
"""
import numpy as np


def numpy_dual_attention(q, k, v, temperature, weights, topk, eps=1e-12):
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    temperature = np.asarray(temperature, dtype=np.float64).reshape(-1)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    batch, heads, channels, _ = q.shape
    out = np.zeros_like(v)
    for b in range(batch):
        for h in range(heads):
            qn = q[b, h] / np.maximum(np.sqrt((q[b, h] ** 2).sum(-1, keepdims=True)), eps)
            kn = k[b, h] / np.maximum(np.sqrt((k[b, h] ** 2).sum(-1, keepdims=True)), eps)
            scores = temperature[h] * (qn @ kn.T)
            attn = np.zeros((channels, channels))
            for w, keep in zip(weights, topk):
                for r in range(channels):
                    row = scores[r]
                    if keep is None:
                        kept = np.ones(channels, dtype=bool)
                    else:
                        threshold = np.sort(row)[::-1][keep - 1]
                        kept = row >= threshold
                    e = np.where(kept, np.exp(row - row[kept].max()), 0.0)
                    attn[r] += w * e / e.sum()
            out[b, h] = attn @ v[b, h]
    return out
