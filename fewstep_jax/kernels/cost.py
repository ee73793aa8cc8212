"""Analytic cost of the flash attention kernels (what bench_attention prints)."""


def cost_model(n: int, m: int, head_dim: int, *, bytes_per_element: int = 2
               ) -> dict[str, dict[str, float]]:
  """FLOPs and HBM bytes per (batch, head) of the three kernel families.

  Matmul FLOPs only (2 per multiply-add), non-causal; a causal call does about
  half. HBM bytes count each kernel's mandatory reads and writes of the
  [seq, head_dim] operands (at `bytes_per_element`) and the float32 per-row
  arrays, once each: the in-kernel re-reads of K and V per query tile are
  served from cache / VMEM in the ideal case this models.

  forward:  S = QK^T, O = PV                                   4 N M d
  jvp:      S, dQ K^T, Q dK^T, P dV, (P∘dS) V                 10 N M d
  backward: dK/dV pass (S, P^T gO, gO V^T, dS^T Q) 8 N M d
            + dQ pass (S, gO V^T, dS K)               6 N M d  14 N M d

  Args:
    n, m: query and key lengths.
    head_dim: d.
    bytes_per_element: of q, k, v, O and their tangents / cotangents.

  Returns:
    {'forward' | 'jvp' | 'backward': {'flops', 'hbm_bytes'}}.
  """
  e, d = bytes_per_element, head_dim
  rows_n = 4 * n  # one float32 per query row (L, dL, delta)
  return {
      'forward': {'flops': 4 * n * m * d,
                  # read Q, K, V; write O, L
                  'hbm_bytes': e * d * (2 * n + 2 * m) + rows_n},
      'jvp': {'flops': 10 * n * m * d,
              # read Q, K, V, O, L, dQ, dK, dV; write dO, dL
              'hbm_bytes': e * d * (4 * n + 4 * m) + 2 * rows_n},
      'backward': {'flops': 14 * n * m * d,
                   # dK/dV pass: read Q, K, V, gO, L, delta; write dK, dV
                   # dQ pass: read Q, K, V, gO, L, delta; write dQ
                   'hbm_bytes': e * d * (5 * n + 6 * m) + 4 * rows_n},
  }
