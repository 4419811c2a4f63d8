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
    parse_npy(&data).map_err(|e| match e {
        Error::BadFile { what, detail } => Error::BadFile {
            what,
            detail: format!("{}: {detail}", path.display()).into(),
        },
        e => e,
    })
}

/// Parses `.npy` bytes. Every length comes from the file, so each is checked before use:
/// a short, truncated or lying file is a typed error, never a panic or a huge allocation.
pub fn parse_npy(data: &[u8]) -> Result<(Vec<usize>, Vec<f32>)> {
    let bad = |d: &str| Error::BadFile {
        what: "npy",
        detail: alloc::string::String::from(d).into(),
    };
    if data.len() < 10 || &data[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file"));
    }
    let (hlen, start) = match data[6] {
        1 => (u16::from_le_bytes([data[8], data[9]]) as usize, 10usize),
        2 | 3 => {
            let b = data.get(8..12).ok_or_else(|| bad("truncated header"))?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        v => return Err(bad(&format!("unknown .npy version {v}"))),
    };
    let header = data
        .get(start..start.saturating_add(hlen))
        .ok_or_else(|| bad("truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text"))?;
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
    let want = shape
        .iter()
        .try_fold(4usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| bad("shape too large"))?;
    if body.len() != want {
        return Err(bad("data length does not match the shape"));
    }
    Ok((
        shape,
        body.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(shape: &[usize], v: &[f32]) -> Vec<u8> {
        let p = std::env::temp_dir().join(format!(
            "edgetune-npy-{}-{}.npy",
            std::process::id(),
            v.len()
        ));
        write_npy(&p, shape, v).unwrap();
        let b = std::fs::read(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        b
    }

    #[test]
    fn round_trip() {
        let v: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
        assert_eq!(parse_npy(&npy(&[3, 4], &v)).unwrap(), (vec![3, 4], v));
    }

    /// Every prefix of a valid file, and files whose header lies about the shape or the
    /// version, give a typed error (the test profile checks overflow, so a panic fails).
    #[test]
    fn short_and_lying_files_are_typed_errors() {
        let good = npy(&[2, 3], &[1.0; 6]);
        for n in 0..good.len() {
            assert!(
                matches!(parse_npy(&good[..n]), Err(Error::BadFile { .. })),
                "prefix {n}"
            );
        }
        let text = String::from_utf8_lossy(&good).to_string();
        for (from, to) in [
            ("(2, 3)", "(2, 4)"),
            ("(2, 3)", "(99999999999999999, 99999999999999999)"),
            ("(2, 3)", "(-2, 3)"),
            ("<f4", "<f8"),
        ] {
            let lie = text.replacen(from, to, 1).into_bytes();
            assert!(
                matches!(parse_npy(&lie), Err(Error::BadFile { .. })),
                "{to}"
            );
        }
        for version in [0u8, 2, 9] {
            let mut b = good.clone();
            b[6] = version;
            if version == 2 {
                b.truncate(11);
            }
            assert!(
                matches!(parse_npy(&b), Err(Error::BadFile { .. })),
                "v{version}"
            );
        }
    }
}
