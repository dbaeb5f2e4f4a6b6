"""Exact fingerprints of tensors inside a traced step: what the anatomy of a step compares.

Two versions of a framework are compared stage by stage (batch, weights, output, loss, gradients,
update) at the first step where their histories part. A float64 sum would miss a one-ulp change
of one float64 weight among many (the sum rounds it away), so each tensor is reduced to a 64-bit
digest of its bit patterns instead: any change of any element's bits changes the digest (up to
a collision of 2^-64), and order matters, so a reordered batch is another batch. Integer
arithmetic wraps, in TensorFlow's kernels and in XLA alike, which is what a digest wants.
"""

from __future__ import annotations

from typing import Any

GOLDEN = 0x9E3779B1
"""An odd multiplier per position (Knuth's multiplicative hash constant): a change of one
element by one bit pattern step changes the sum by an odd multiple, never by 0 modulo 2^64."""

_INT_OF_WIDTH = {2: "int16", 4: "int32", 8: "int64"}


def digest(tf: Any, value: Any) -> Any:
    """A scalar int64 that changes with any bit of ``value`` (a tensor, IndexedSlices or a nest)."""
    if isinstance(value, tf.IndexedSlices):
        return _combine(tf, [digest(tf, value.values), digest(tf, value.indices)])
    parts = tf.nest.flatten(value)
    if len(parts) != 1:
        return _combine(tf, [digest(tf, part) for part in parts if part is not None])
    tensor = tf.convert_to_tensor(parts[0])
    flat = tf.reshape(tensor, [-1])
    dtype = flat.dtype
    if dtype.is_floating:
        bits = getattr(tf, _INT_OF_WIDTH[dtype.size])
        ints = tf.cast(tf.bitcast(flat, bits), tf.int64)
    elif dtype.is_integer or dtype == tf.bool:
        ints = tf.cast(flat, tf.int64)
    elif dtype == tf.string:
        ints = tf.strings.to_hash_bucket_fast(flat, 1 << 62)
    else:
        return tf.constant(0, tf.int64)
    count = tf.size(ints, out_type=tf.int64)
    positions = tf.range(count, dtype=tf.int64) * GOLDEN + 1
    return tf.reduce_sum(ints * positions) + count


def row_set_digest(tf: Any, value: Any) -> Any:
    """A digest of a batch's rows that ignores their order: the same samples in another order
    (Keras 2 reshuffles a two-sample batch every epoch, Keras 3 does not) digest the same, so the
    gate can tell "other samples" from "the same samples, reordered".

    Each row is digested across every tensor of the nest (x and y of one sample together), and
    the rows' digests are summed. A nest whose tensors are not all batch-major gives the ordered
    digest instead."""
    parts = [tf.convert_to_tensor(p) for p in tf.nest.flatten(value) if p is not None]
    if isinstance(value, tf.IndexedSlices) or not parts or any(p.shape.rank in (None, 0) for p in parts):
        return digest(tf, value)
    leading = {p.shape[0] for p in parts if p.shape[0] is not None}
    if len(leading) > 1:
        return digest(tf, value)
    rows: Any = None
    for index, part in enumerate(parts):
        flat = tf.reshape(part, [tf.shape(part)[0], -1])
        dtype = flat.dtype
        if dtype.is_floating:
            ints = tf.cast(tf.bitcast(flat, getattr(tf, _INT_OF_WIDTH[dtype.size])), tf.int64)
        elif dtype.is_integer or dtype == tf.bool:
            ints = tf.cast(flat, tf.int64)
        else:
            return digest(tf, value)
        columns = tf.range(tf.shape(ints, out_type=tf.int64)[1], dtype=tf.int64) * GOLDEN + 1
        digests = tf.reduce_sum(ints * columns, axis=1) * (2 * index + 3)
        rows = digests if rows is None else rows + digests
    # squared, so that two rows' changes cannot cancel in the sum as plain sums could
    return tf.reduce_sum(rows * rows + rows)


def value_sum(tf: Any, value: Any) -> Any:
    """The float64 sum of a tensor's values: not exact, but it says by how much two differ."""
    if isinstance(value, tf.IndexedSlices):
        value = value.values
    parts = [p for p in tf.nest.flatten(value) if p is not None]
    sums = [tf.reduce_sum(tf.cast(p, tf.float64)) for p in parts if tf.as_dtype(p.dtype).is_floating]
    return tf.add_n(sums) if sums else tf.constant(0.0, tf.float64)


def _combine(tf: Any, digests: list[Any]) -> Any:
    if not digests:
        return tf.constant(0, tf.int64)
    stacked = tf.stack(digests)
    positions = tf.range(tf.size(stacked, out_type=tf.int64), dtype=tf.int64) * GOLDEN + 1
    return tf.reduce_sum(stacked * positions)
