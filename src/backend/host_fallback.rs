//! Host fallbacks of [`Backend`] operations a backend may leave unimplemented: each copies its
//! operands to the host, runs the CPU backend's kernel there and copies the result back. They
//! are the trait's default `*_impl` methods, so a new backend runs the bidirectional encoder
//! before it has kernels of its own; sizes are already checked by the trait's wrappers.

use super::cpu::encoder_ops;
use super::{Backend, FullAttentionShape, NormShape, RowCopy};
use crate::model::input_file::try_filled;
use crate::Result;

/// A host copy of the first `len` elements of `buf`.
fn to_host<B: Backend + ?Sized>(be: &B, buf: &B::Buf, len: usize) -> Result<Vec<f32>> {
    let mut host = try_filled(len, 0.0)?;
    be.read(buf, &mut host)?;
    Ok(host)
}

/// [`Backend::layer_norm`] on host copies.
pub fn layer_norm<B: Backend + ?Sized>(
    be: &B,
    x: &B::Buf,
    g: &B::Buf,
    b: &B::Buf,
    out: &mut B::Buf,
    shape: &NormShape,
) -> Result<()> {
    let (n, dim) = (shape.rows * shape.dim, shape.dim);
    let (hx, hg, hb) = (
        to_host(be, x, n)?,
        to_host(be, g, dim)?,
        to_host(be, b, dim)?,
    );
    let mut ho = try_filled(n, 0.0)?;
    encoder_ops::layer_norm(&hx, &hg, &hb, &mut ho, dim, shape.eps);
    be.write(out, &ho)
}

/// [`Backend::copy_rows`] through host copies of both buffers up to the last row touched.
pub fn copy_rows<B: Backend + ?Sized>(
    be: &B,
    src: &B::Buf,
    dst: &mut B::Buf,
    c: &RowCopy,
) -> Result<()> {
    let (s, d) = c.check(be.buf_len(src), be.buf_len(dst))?;
    let h = to_host(be, src, s.end)?;
    let mut out = to_host(be, dst, d.end)?;
    out[d].copy_from_slice(&h[s]);
    be.write(dst, &out)
}

/// [`Backend::gelu`] on a host copy.
pub fn gelu<B: Backend + ?Sized>(be: &B, x: &mut B::Buf, len: usize) -> Result<()> {
    let mut h = to_host(be, x, len)?;
    h.iter_mut().for_each(|v| *v = encoder_ops::gelu(*v));
    be.write(x, &h)
}

/// [`Backend::attention_full`] on host copies.
pub fn attention_full<B: Backend + ?Sized>(
    be: &B,
    q: &B::Buf,
    k: &B::Buf,
    v: &B::Buf,
    out: &mut B::Buf,
    shape: &FullAttentionShape,
) -> Result<()> {
    let w = shape.n_heads * shape.head_dim;
    let hq = to_host(be, q, shape.n_q * w)?;
    let (hk, hv) = (
        to_host(be, k, shape.n_k * w)?,
        to_host(be, v, shape.n_k * w)?,
    );
    let mut ho = try_filled(shape.n_q * w, 0.0)?;
    encoder_ops::attention_full(&hq, &hk, &hv, &mut ho, shape);
    be.write(out, &ho)
}

/// [`Backend::mean_rows`] on a host copy.
pub fn mean_rows<B: Backend + ?Sized>(
    be: &B,
    x: &B::Buf,
    out: &mut B::Buf,
    rows: usize,
    width: usize,
) -> Result<()> {
    let hx = to_host(be, x, rows * width)?;
    let mut ho = try_filled(width, 0.0)?;
    encoder_ops::mean_rows(&hx, &mut ho, rows);
    be.write(out, &ho)
}
