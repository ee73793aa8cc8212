"""Minibatch noise-data couplings (Multisample Flow Matching, Pooladian et al. 2023; Immiscible Diffusion,
Li et al. 2024), an option of every path-based method (`method.coupling`).

Inside a batch the noise is permuted to pair each x_i with eps_pi(i), making sum_i ||x_i - eps_pi(i)||^2
small. A permutation of i.i.d. noise keeps both marginals: every x is still a data sample and the set of noise
vectors is still i.i.d. N(0, I). With class labels, pairs are only formed inside a class (a penalty larger
than any cost forbids crossing), so the noise of each class also stays N(0, I), which class-conditional
sampling relies on.

  independent   no re-pairing (the identity permutation).
  exact         optimal assignment by the auction algorithm with epsilon scaling (Bertsekas 1988), in pure
                JAX so it runs inside the jitted step on any mesh. Its total cost is within n * eps_final of
                the optimum, with eps_final = 1e-3 / n of the largest pairwise cost: exact to a relative
                ~1e-5 (the tests compare with scipy's Hungarian solver).
  greedy        cheaper approximation: data points in random order each take the nearest unused noise
                vector. O(n^2) work in n sequential steps, no iteration to convergence.
"""
import jax
import jax.numpy as jnp

# Phases of epsilon scaling: eps goes from 1/4 of the cost range down by this factor per phase.
_EPS_FACTOR = 6.0
_FINAL_EPS = 1e-3  # Times the cost range, divided by n.


def pair_costs(x, eps, y=None):
  """Squared distances C[i, j] = ||x_i - eps_j||^2 / max C, in [0, 1], plus 2 for pairs of different
  classes (y [n] or None); x, eps [n, ...]."""
  n = x.shape[0]
  a, b = x.reshape(n, -1).astype(jnp.float32), eps.reshape(n, -1).astype(jnp.float32)
  cost = jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2 * a @ b.T
  cost = jnp.maximum(cost, 0.0)
  cost = cost / jnp.maximum(jnp.max(cost), 1e-12)
  if y is not None:
    cost = cost + 2.0 * (y[:, None] != y[None, :])
  return cost


def auction_assignment(cost, max_rounds: int = 100_000):
  """Minimum-cost perfect matching of the square matrix `cost` [n, n] with entries in [0, C].

  Returns perm [n] int32 with row i assigned to column perm[i]. Jacobi auction: every unassigned row bids
  on its best column (value = -cost - price) by the gap to its second best plus eps; each column goes to its
  highest bidder. Prices persist across the eps phases; assignments restart each phase.
  """
  n = cost.shape[0]
  if n == 1:
    return jnp.zeros((1,), jnp.int32)
  benefit = -cost
  cost_range = jnp.max(cost) - jnp.min(cost) + 1e-12
  final_eps = _FINAL_EPS * cost_range / n
  columns = jnp.arange(n)

  def bidding_round(carry):
    owner, assigned, prices, eps, rounds = carry
    values = benefit - prices[None, :]
    best = jnp.argmax(values, axis=1)
    is_best = best[:, None] == columns[None, :]
    first = jnp.max(values, axis=1)
    second = jnp.max(jnp.where(is_best, -jnp.inf, values), axis=1)
    bids = prices[best] + first - second + eps
    bidding = assigned < 0
    offer = jnp.where(bidding[:, None] & is_best, bids[:, None], -jnp.inf)
    best_offer = jnp.max(offer, axis=0)
    winner = jnp.argmax(offer, axis=0)
    sold = jnp.isfinite(best_offer)
    # Rows that lose their column become unassigned; winners take theirs.
    lost = jnp.zeros(n, bool).at[jnp.where(sold & (owner >= 0), owner, n)].set(True, mode='drop')
    assigned = jnp.where(lost, -1, assigned)
    assigned = assigned.at[jnp.where(sold, winner, n)].set(jnp.arange(n), mode='drop')
    owner = jnp.where(sold, winner, owner)
    prices = jnp.where(sold, best_offer, prices)
    return owner, assigned, prices, eps, rounds + 1

  def phase(carry):
    prices, eps, rounds = carry
    start = (jnp.full(n, -1), jnp.full(n, -1), prices, eps, rounds)
    _, assigned, prices, _, rounds = jax.lax.while_loop(
        lambda c: jnp.any(c[1] < 0) & (c[4] < max_rounds), bidding_round, start)
    return assigned, prices, eps, rounds

  def next_phase(carry):
    _, prices, eps, rounds = carry
    return phase((prices, jnp.maximum(eps / _EPS_FACTOR, final_eps), rounds))

  first = phase((jnp.zeros(n, cost.dtype), cost_range / 4, jnp.zeros((), jnp.int32)))
  assigned, _, _, _ = jax.lax.while_loop(
      lambda c: (c[2] > final_eps) & (c[3] < max_rounds), next_phase, first)
  return assigned.astype(jnp.int32)


def greedy_assignment(key, cost):
  """Approximate matching: rows in random order each take the cheapest unused column. perm [n] int32."""
  n = cost.shape[0]
  order = jax.random.permutation(key, n)

  def take(used, row):
    column = jnp.argmin(jnp.where(used, jnp.inf, cost[row]))
    return used.at[column].set(True), column

  _, columns = jax.lax.scan(take, jnp.zeros(n, bool), order)
  return jnp.zeros(n, jnp.int32).at[order].set(columns.astype(jnp.int32))


COUPLINGS = {
    'independent': lambda key, cost: jnp.arange(cost.shape[0], dtype=jnp.int32),
    'exact': lambda key, cost: auction_assignment(cost),
    'greedy': greedy_assignment,
}


def check_coupling(name: str):
  if name not in COUPLINGS:
    raise ValueError(f'unknown method.coupling {name!r}; known: {sorted(COUPLINGS)}')


def couple(name: str, key, x, eps, y=None):
  """eps re-ordered to pair with x under coupling `name`: [n, ...] -> [n, ...] (no gradient)."""
  check_coupling(name)
  if name == 'independent':
    return eps
  cost = jax.lax.stop_gradient(pair_costs(x, eps, y))
  return eps[COUPLINGS[name](key, cost)]
