//! Minimal `.npy` (little-endian f32, C order) reading and writing.

use crate::error::{Error, Result};
use std::path::Path;

fn io_err(p: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: p.display().to_string(),
        detail: e.to_string(),
    }
}

pub fn read_npy(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let data = std::fs::read(path).map_err(|e| io_err(path, e))?;
    let bad = |d: &str| Error::BadFile {
        what: "npy",
        detail: format!("{}: {d}", path.display()),
    };
    if data.len() < 10 || &data[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file"));
    }
    let (hlen, start) = if data[6] == 1 {
        (u16::from_le_bytes([data[8], data[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes(data[8..12].try_into().unwrap()) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(
        data.get(start..start + hlen)
            .ok_or_else(|| bad("truncated header"))?,
    )
    .map_err(|_| bad("header"))?;
    if !header.contains("'<f4'") || header.contains("'fortran_order': True") {
        return Err(bad("only little-endian f32 C-order arrays"));
    }
    let shape_s = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape"))?;
    let shape: Vec<usize> = shape_s
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().map_err(|_| bad("shape")))
        .collect::<Result<_>>()?;
    let body = &data[start + hlen..];
    if body.len() != shape.iter().product::<usize>() * 4 {
        return Err(bad("data length does not match the shape"));
    }
    Ok((
        shape,
        body.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
    ))
}

pub fn write_npy(path: &Path, shape: &[usize], v: &[f32]) -> Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_s = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut h = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_s}, }}");
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    v.iter()
        .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
    crate::fsutil::write_atomic(path, &out)
}
