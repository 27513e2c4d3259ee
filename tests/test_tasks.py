"""Exactness of the task generators and correctness of the progress measures."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from factrfm.datasets.tasks import (
    PAPER_SUPPORT,
    all_pairs,
    discrete_log_table,
    is_prime,
    modular_arithmetic,
    modular_op,
    parity_support,
    primitive_root,
    sparse_parity,
)
from factrfm.experiments.measures import (
    circulant_deviation,
    discrete_log_order,
    first_iteration_above,
    modular_block_order,
    modular_circulant_deviation,
    nearest_circulant,
    reorder_feature_matrix,
    support_weight,
    top_k_indices,
)

# --------------------------------------------------------------------------- number theory


def test_is_prime_matches_brute_force():
    for n in range(-3, 200):
        brute = n >= 2 and all(n % f for f in range(2, n))
        assert is_prime(n) == brute, n


@pytest.mark.parametrize("p", [2, 3, 5, 7, 11, 13, 31, 61, 97, 101])
def test_primitive_root_generates_the_multiplicative_group(p):
    g = primitive_root(p)
    assert {pow(g, k, p) for k in range(p - 1)} == set(range(1, p))
    # it is the smallest such g
    for h in range(2, g):
        assert len({pow(h, k, p) for k in range(p - 1)}) < p - 1


def test_primitive_root_rejects_composite():
    with pytest.raises(ValueError, match="p must be a prime"):
        primitive_root(60)


@pytest.mark.parametrize("p", [5, 13, 61])
def test_discrete_log_inverts_powers(p):
    g = primitive_root(p)
    log = discrete_log_table(p)
    assert log[0] == -1
    for x in range(1, p):
        assert pow(g, int(log[x]), p) == x
    order = discrete_log_order(p)
    assert [pow(g, k, p) for k in range(p - 1)] == order.tolist()


def test_discrete_log_rejects_non_root():
    with pytest.raises(ValueError, match="not a primitive root"):
        discrete_log_table(7, g=2)  # 2 has order 3 mod 7


# --------------------------------------------------------------------------- modular data


@pytest.mark.parametrize("operation", ["add", "sub", "mul", "div"])
def test_modular_pairs_each_appear_once(operation):
    p = 11
    pairs = all_pairs(p, operation)
    b_values = range(1, p) if operation == "div" else range(p)
    expected = set(itertools.product(range(p), b_values))
    assert len(pairs) == len(expected)
    assert {tuple(r) for r in pairs.tolist()} == expected

    data = modular_arithmetic(p, operation, train_fraction=0.3, seed=4)
    train = [tuple(r) for r in data.train_pairs.tolist()]
    test = [tuple(r) for r in data.test_pairs.tolist()]
    assert len(set(train)) == len(train) and len(set(test)) == len(test)
    assert set(train).isdisjoint(test)
    assert set(train) | set(test) == expected
    assert len(train) == round(0.3 * len(expected))


@pytest.mark.parametrize("operation", ["add", "sub", "mul", "div"])
def test_modular_labels_and_encoding_are_exact(operation):
    p = 7
    data = modular_arithmetic(p, operation, train_fraction=0.5, seed=1)
    for pairs, X, Y, y in [
        (data.train_pairs, data.X_train, data.Y_train, data.y_train),
        (data.test_pairs, data.X_test, data.Y_test, data.y_test),
    ]:
        for (a, b), x_row, y_row, label in zip(pairs, X, Y, y, strict=True):
            if operation == "add":
                c = (a + b) % p
            elif operation == "sub":
                c = (a - b) % p
            elif operation == "mul":
                c = (a * b) % p
            else:  # the c with c * b = a (mod p), found by search
                c = next(c for c in range(p) if (c * b) % p == a)
            assert label == c
            assert x_row.sum() == 2 and x_row[a] == 1 and x_row[p + b] == 1
            assert y_row.sum() == 1 and y_row[c] == 1


def test_modular_split_is_seeded():
    a = modular_arithmetic(13, "add", 0.5, seed=3)
    b = modular_arithmetic(13, "add", 0.5, seed=3)
    c = modular_arithmetic(13, "add", 0.5, seed=4)
    assert np.array_equal(a.train_pairs, b.train_pairs)
    assert not np.array_equal(a.train_pairs, c.train_pairs)


def test_modular_bad_input_is_named():
    with pytest.raises(ValueError, match="p must be a prime"):
        modular_arithmetic(12)
    with pytest.raises(ValueError, match="operation must be one of"):
        modular_arithmetic(7, "pow")
    with pytest.raises(ValueError, match="train_fraction"):
        modular_arithmetic(7, "add", train_fraction=1.0)
    with pytest.raises(ValueError, match="division by zero"):
        modular_op(np.array([1]), np.array([0]), 7, "div")


# --------------------------------------------------------------------------- sparse parity


@pytest.mark.parametrize("encoding", ["binary", "pm1"])
def test_parity_label_is_xor_of_support(encoding):
    support = (1, 4, 6)
    X, y = sparse_parity(500, d=8, support=support, encoding=encoding, seed=2)
    assert X.shape == (500, 8) and y.shape == (500,)
    values = {0.0, 1.0} if encoding == "binary" else {-1.0, 1.0}
    assert set(torch.unique(X).tolist()) == values
    for row, label in zip(X.tolist(), y.tolist(), strict=True):
        if encoding == "binary":
            bits = [int(row[i]) for i in support]
        else:
            bits = [int(row[i] == -1) for i in support]
        assert label == (bits[0] ^ bits[1] ^ bits[2])
        if encoding == "pm1":  # y = 1 exactly when the product of the support is -1
            assert label == int(np.prod([row[i] for i in support]) < 0)


def test_parity_is_balanced_and_uniform():
    X, y = sparse_parity(20000, d=10, support=(0, 3), seed=0)
    assert abs(y.mean() - 0.5) < 0.02
    assert torch.all((X.mean(0) - 0.5).abs() < 0.02)


def test_parity_default_support_is_papers():
    assert parity_support(4, 50) == PAPER_SUPPORT
    assert parity_support(2, 50) == (7, 15)
    assert parity_support(3, 10) == (0, 1, 7)  # only 7 fits in d = 10; filled with 0, 1


def test_parity_bad_input_is_named():
    with pytest.raises(ValueError, match="support indices must lie in 0..9"):
        sparse_parity(10, d=10, support=(3, 10))
    with pytest.raises(ValueError, match="must not repeat"):
        sparse_parity(10, d=10, support=(3, 3))
    with pytest.raises(ValueError, match="encoding"):
        sparse_parity(10, d=10, support=(3,), encoding="gray")
    with pytest.raises(ValueError, match="n must be a positive int"):
        sparse_parity(0, d=10, support=(3,))


# --------------------------------------------------------------------------- measures


def _circulant(c):
    m = len(c)
    return np.array([[c[(j - i) % m] for j in range(m)] for i in range(m)])


def test_circulant_deviation_is_zero_for_circulant_and_not_for_random():
    rng = np.random.default_rng(0)
    C = _circulant(rng.normal(size=17))
    assert circulant_deviation(C) < 1e-12
    assert np.allclose(nearest_circulant(C), C)
    assert circulant_deviation(torch.as_tensor(C)) < 1e-12
    R = rng.normal(size=(17, 17))
    assert circulant_deviation(R) > 0.8  # about sqrt(1 - 1/m) for iid entries
    # a large constant offset does not hide the deviation
    assert abs(circulant_deviation(R + 100.0) - circulant_deviation(R)) < 1e-9
    # halfway between: strictly between
    mid = circulant_deviation(C + 0.3 * R)
    assert 0.0 < mid < circulant_deviation(R)
    assert circulant_deviation(np.zeros((5, 5))) == 0.0


def test_nearest_circulant_is_the_frobenius_projection():
    rng = np.random.default_rng(1)
    R = rng.normal(size=(9, 9))
    P = nearest_circulant(R)
    # residual orthogonal to every circulant basis matrix
    for k in range(9):
        basis = _circulant(np.eye(9)[k])
        assert abs(np.sum((R - P) * basis)) < 1e-10


# the combination of a and b on which the (a, b) block of a learned M depends (see
# measures.modular_block_order): a - b for +, a + b for -, a / b for *, a * b for /
_BLOCK_DEPENDENCE = {"add": "sub", "sub": "add", "mul": "div", "div": "mul"}


@pytest.mark.parametrize("operation", ["add", "sub", "mul", "div"])
def test_block_of_a_structured_matrix_becomes_circulant_after_reordering(operation):
    """A block B[a, b] = h(a op' b) (h random) is circulant after the re-ordering, not before."""
    p = 13
    h = np.random.default_rng(2).normal(size=p)
    dep = _BLOCK_DEPENDENCE[operation]
    B = np.zeros((p, p))
    for a in range(p):
        for b in range(p):
            if dep == "div" and b == 0:
                continue
            B[a, b] = h[modular_op(np.array([a]), np.array([b]), p, dep)[0]]
    M = np.zeros((2 * p, 2 * p))
    M[:p, p:] = B
    M[p:, :p] = B.T
    assert modular_circulant_deviation(M, p, operation) < 1e-12
    if operation != "add":  # in the natural order only the block for + is circulant
        natural = B if operation == "sub" else B[1:, 1:]
        assert circulant_deviation(natural) > 0.3
    # the orders of the other operations do not make it circulant
    for other in ("add", "sub", "mul", "div"):
        if other != operation:
            assert modular_circulant_deviation(M, p, other) > 0.3
    # heat-map re-ordering is a symmetric permutation of M
    R = reorder_feature_matrix(M, p, operation)
    assert np.allclose(np.sort(np.linalg.eigvalsh(R)), np.sort(np.linalg.eigvalsh(M)))
    rows, cols = modular_block_order(p, operation)
    m = len(rows)
    assert circulant_deviation(R[:m, p : p + m]) < 1e-12


def test_modular_measures_reject_wrong_shape():
    with pytest.raises(ValueError, match=r"M must have shape \(2p, 2p\)"):
        modular_circulant_deviation(np.eye(10), 7, "add")


def test_support_weight_and_top_k():
    diag = np.array([0.1, 5.0, 0.2, 4.0, 0.1, 0.6])
    assert support_weight(diag, [1, 3]) == pytest.approx(9.0 / 10.0)
    assert top_k_indices(diag, 2) == (1, 3)
    assert top_k_indices(torch.as_tensor(diag), 3) == (1, 3, 5)
    with pytest.raises(ValueError, match="non-negative"):
        support_weight(np.array([1.0, -1.0]), [0])


def test_first_iteration_above():
    assert first_iteration_above([0, 1, 2, 3], [0.1, 0.5, 0.6, 1.0], 0.5) == 2
    assert first_iteration_above([0, 1], [0.1, 0.2], 0.5) is None
    with pytest.raises(ValueError, match="same length"):
        first_iteration_above([0, 1], [0.1], 0.5)
