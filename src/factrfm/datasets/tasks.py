"""Synthetic tasks: modular arithmetic (grokking) and sparse parity.

Both generators are exact and seeded: every random choice goes through a ``numpy.random.Generator``
built from ``seed``, and the same seed gives the same split or sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

OPERATIONS = ("add", "sub", "mul", "div")
_OP_SYMBOLS = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


def is_prime(p: int) -> bool:
    """Return True when ``p`` is a prime number (trial division; p is small here).

    Parameters
    ----------
    p : int
        The number to test.

    Returns
    -------
    bool
    """
    if p < 2:
        return False
    if p < 4:
        return True
    if p % 2 == 0:
        return False
    f = 3
    while f * f <= p:
        if p % f == 0:
            return False
        f += 2
    return True


def _check_prime(p: int, name: str = "p") -> int:
    if isinstance(p, bool) or not isinstance(p, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(p).__name__}")
    p = int(p)
    if not is_prime(p):
        raise ValueError(f"{name} must be a prime number, got {p}")
    return p


def _prime_factors(n: int) -> list[int]:
    factors = []
    f = 2
    while f * f <= n:
        if n % f == 0:
            factors.append(f)
            while n % f == 0:
                n //= f
        f += 1
    if n > 1:
        factors.append(n)
    return factors


def primitive_root(p: int) -> int:
    """Smallest primitive root modulo the prime ``p`` (a generator of the multiplicative group).

    ``g`` is a primitive root when ``g^((p-1)/q) != 1 (mod p)`` for every prime factor q of p - 1.

    Parameters
    ----------
    p : int
        A prime.

    Returns
    -------
    int
        The smallest g in 1..p-1 whose powers run through all of 1..p-1.
    """
    p = _check_prime(p)
    if p == 2:
        return 1
    qs = _prime_factors(p - 1)
    for g in range(2, p):
        if all(pow(g, (p - 1) // q, p) != 1 for q in qs):
            return g
    raise RuntimeError(f"no primitive root found modulo {p}")  # unreachable for a prime


def discrete_log_table(p: int, g: int | None = None) -> np.ndarray:
    """Discrete logarithms modulo ``p``: ``log[x] = k`` with ``g^k = x (mod p)`` for x in 1..p-1.

    Parameters
    ----------
    p : int
        A prime.
    g : int, optional
        The base; a primitive root of p (default: the smallest one).

    Returns
    -------
    numpy.ndarray of int, shape (p,)
        ``log[0]`` is -1 (zero has no logarithm); ``log[x]`` in 0..p-2 otherwise.
    """
    p = _check_prime(p)
    g = primitive_root(p) if g is None else int(g)
    log = np.full(p, -1, dtype=np.int64)
    x = 1
    for k in range(p - 1):
        if log[x] != -1:
            raise ValueError(f"g={g} is not a primitive root modulo {p}")
        log[x] = k
        x = (x * g) % p
    return log


def modular_op(a: np.ndarray, b: np.ndarray, p: int, operation: str) -> np.ndarray:
    """Apply ``(a op b) mod p`` elementwise; division multiplies by the inverse of b (b != 0).

    Parameters
    ----------
    a, b : numpy.ndarray of int
        Operands in 0..p-1.
    p : int
        The prime modulus.
    operation : {"add", "sub", "mul", "div"}

    Returns
    -------
    numpy.ndarray of int
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if operation == "add":
        return (a + b) % p
    if operation == "sub":
        return (a - b) % p
    if operation == "mul":
        return (a * b) % p
    if operation == "div":
        if np.any(b % p == 0):
            raise ValueError("division by zero: b must be in 1..p-1 for operation 'div'")
        inv = np.array([pow(int(v), p - 2, p) for v in range(p)], dtype=np.int64)
        return (a * inv[b % p]) % p
    raise ValueError(f"operation must be one of {OPERATIONS}, got {operation!r}")


@dataclass
class ModularData:
    """A train/test split of all pairs (a, b) for one modular operation.

    Attributes
    ----------
    p, operation : the modulus and the operation name.
    train_pairs, test_pairs : (n, 2) int arrays of the pairs (a, b).
    X_train, X_test : (n, 2p) float tensors, rows e_a (+) e_b.
    Y_train, Y_test : (n, p) float tensors, rows e_{(a op b) mod p}.
    y_train, y_test : (n,) int arrays of the labels.
    """

    p: int
    operation: str
    train_pairs: np.ndarray
    test_pairs: np.ndarray
    X_train: torch.Tensor
    Y_train: torch.Tensor
    X_test: torch.Tensor
    Y_test: torch.Tensor
    y_train: np.ndarray
    y_test: np.ndarray


def all_pairs(p: int, operation: str) -> np.ndarray:
    """Every admissible pair (a, b) once: a, b in 0..p-1, and b != 0 for division.

    Parameters
    ----------
    p : int
        The prime modulus.
    operation : {"add", "sub", "mul", "div"}

    Returns
    -------
    numpy.ndarray of int, shape (p * p, 2) or (p * (p - 1), 2)
    """
    p = _check_prime(p)
    if operation not in OPERATIONS:
        raise ValueError(f"operation must be one of {OPERATIONS}, got {operation!r}")
    b_values = np.arange(1, p) if operation == "div" else np.arange(p)
    a, b = np.meshgrid(np.arange(p), b_values, indexing="ij")
    return np.stack([a.ravel(), b.ravel()], axis=1).astype(np.int64)


def encode_pairs(pairs: np.ndarray, p: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot encode pairs as e_a (+) e_b in R^{2p}.

    Parameters
    ----------
    pairs : (n, 2) int array
    p : int
    dtype : torch.dtype

    Returns
    -------
    torch.Tensor, shape (n, 2p)
    """
    pairs = np.asarray(pairs, dtype=np.int64)
    X = torch.zeros(len(pairs), 2 * p, dtype=dtype)
    rows = torch.arange(len(pairs))
    X[rows, torch.from_numpy(pairs[:, 0])] = 1
    X[rows, p + torch.from_numpy(pairs[:, 1])] = 1
    return X


def one_hot(labels: np.ndarray, n_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot rows for integer labels in 0..n_classes-1."""
    labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    Y = torch.zeros(len(labels), n_classes, dtype=dtype)
    Y[torch.arange(len(labels)), labels] = 1
    return Y


def modular_arithmetic(
    p: int = 61,
    operation: str = "add",
    train_fraction: float = 0.5,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> ModularData:
    """All pairs of ``(a op b) mod p``, split at random into train and test.

    Parameters
    ----------
    p : int
        A prime modulus (default 61).
    operation : {"add", "sub", "mul", "div"}
        For "div", b runs over 1..p-1.
    train_fraction : float in (0, 1)
        Share of all pairs used for training (rounded; at least one pair in each part).
    seed : int
        Seed of the random split.
    dtype : torch.dtype
        Dtype of the returned tensors.

    Returns
    -------
    ModularData
    """
    p = _check_prime(p)
    if not isinstance(train_fraction, (float, int)) or not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be a number in (0, 1), got {train_fraction!r}")
    pairs = all_pairs(p, operation)
    n = len(pairs)
    n_train = min(max(int(round(train_fraction * n)), 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    train_pairs, test_pairs = pairs[np.sort(perm[:n_train])], pairs[np.sort(perm[n_train:])]
    y_train = modular_op(train_pairs[:, 0], train_pairs[:, 1], p, operation)
    y_test = modular_op(test_pairs[:, 0], test_pairs[:, 1], p, operation)
    return ModularData(
        p=p,
        operation=operation,
        train_pairs=train_pairs,
        test_pairs=test_pairs,
        X_train=encode_pairs(train_pairs, p, dtype),
        Y_train=one_hot(y_train, p, dtype),
        X_test=encode_pairs(test_pairs, p, dtype),
        Y_test=one_hot(y_test, p, dtype),
        y_train=y_train,
        y_test=y_test,
    )


PAPER_SUPPORT = (7, 15, 25, 29)
"""The paper's parity support y = x7 xor x15 xor x25 xor x29, read here as 0-based indices."""


def check_support(support: tuple[int, ...] | list[int], d: int) -> tuple[int, ...]:
    """Validate a parity support: distinct 0-based indices in 0..d-1, at least one.

    Returns
    -------
    tuple of int, sorted
    """
    try:
        s = tuple(int(i) for i in support)
    except TypeError as exc:
        raise TypeError(f"support must be a sequence of ints, got {support!r}") from exc
    if len(s) == 0:
        raise ValueError("support must contain at least one coordinate")
    if len(set(s)) != len(s):
        raise ValueError(f"support must not repeat a coordinate, got {s}")
    bad = [i for i in s if not 0 <= i < d]
    if bad:
        raise ValueError(f"support indices must lie in 0..{d - 1} (0-based), got {bad}")
    return tuple(sorted(s))


def parity_support(k: int, d: int = 50) -> tuple[int, ...]:
    """Default support of size k: the first k of the paper's (7, 15, 25, 29), then 0, 1, 2, ... .

    Parameters
    ----------
    k : int
        Number of coordinates in the parity (k >= 1).
    d : int
        Input dimension.

    Returns
    -------
    tuple of int (0-based, sorted)
    """
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if k > d:
        raise ValueError(f"k must be at most d={d}, got {k}")
    chosen = [i for i in PAPER_SUPPORT if i < d][:k]
    extra = (i for i in range(d) if i not in chosen)
    while len(chosen) < k:
        chosen.append(next(extra))
    return check_support(chosen, d)


def sparse_parity(
    n: int,
    d: int = 50,
    support: tuple[int, ...] | list[int] = PAPER_SUPPORT,
    encoding: str = "binary",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, np.ndarray]:
    """Sample ``n`` points of the sparse-parity task.

    x is uniform on {0,1}^d ("binary") or {-1,+1}^d ("pm1"); the label is
    y = XOR of the bits on ``support`` (for "pm1", bit = (x == -1), so y = 1 iff the product of the
    support coordinates is -1).

    Parameters
    ----------
    n : int
        Number of samples.
    d : int
        Dimension.
    support : sequence of int
        0-based coordinate indices.
    encoding : {"binary", "pm1"}
    seed : int
    dtype : torch.dtype

    Returns
    -------
    X : torch.Tensor, shape (n, d)
    y : numpy.ndarray of int in {0, 1}, shape (n,)
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not isinstance(d, (int, np.integer)) or d < 1:
        raise ValueError(f"d must be a positive int, got {d!r}")
    s = check_support(support, d)
    if encoding not in ("binary", "pm1"):
        raise ValueError(f"encoding must be 'binary' or 'pm1', got {encoding!r}")
    bits = np.random.default_rng(seed).integers(0, 2, size=(n, d), dtype=np.int64)
    y = bits[:, list(s)].sum(axis=1) % 2
    values = bits if encoding == "binary" else 1 - 2 * bits
    return torch.as_tensor(values, dtype=dtype), y
