//! Reader of CTranslate2 `model.bin` files (binary version 6): a header, then
//! per variable its name, shape, dtype and raw little-endian bytes, then
//! aliases. Only what the phrase recogniser needs: float variables become
//! f32 tensors, small integer scalars are read as numbers.

use std::collections::BTreeMap;
use std::ops::Range;

use candle_core::{DType, Device, Tensor};
use thiserror::Error;
use timbre_schemas::Code;

/// Why a CTranslate2 file could not be read.
#[derive(Debug, Error)]
pub enum Ct2Error {
    /// The file ends inside a header or a variable.
    #[error("truncated CTranslate2 file: {what} at byte {at} needs {need} more bytes")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Offset of the read.
        at: usize,
        /// Missing bytes.
        need: usize,
    },
    /// Not a version this reader knows.
    #[error("unsupported CTranslate2 binary version {0} (expected 6)")]
    Version(u32),
    /// A name is not UTF-8.
    #[error("CTranslate2 variable name at byte {0} is not UTF-8")]
    Name(usize),
    /// A dtype id this reader does not know.
    #[error("variable {name} has unknown dtype id {id}")]
    Dtype {
        /// Variable.
        name: String,
        /// Dtype id.
        id: u8,
    },
    /// Shape and byte count disagree.
    #[error(
        "variable {name}: shape {shape:?} of {dtype:?} needs {expected} bytes, file has {actual}"
    )]
    Size {
        /// Variable.
        name: String,
        /// Shape.
        shape: Vec<usize>,
        /// Dtype.
        dtype: Ct2Dtype,
        /// Bytes the shape needs.
        expected: usize,
        /// Bytes the file declares.
        actual: usize,
    },
    /// A variable the model needs is absent or of the wrong kind.
    #[error("variable {0} is missing or not of the expected kind")]
    Missing(String),
    /// Bytes after the last alias.
    #[error("{0} unexpected bytes after the end of the CTranslate2 file")]
    Trailing(usize),
    /// Tensor construction failed.
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl Ct2Error {
    /// Stable code: every reader failure means the weights are unusable.
    pub fn code(&self) -> Code {
        Code::ModelBadWeights
    }
}

/// Element types of CTranslate2 variables (ids as the format numbers them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ct2Dtype {
    /// id 0
    F32,
    /// id 1
    I8,
    /// id 2
    I16,
    /// id 3
    I32,
    /// id 4
    F16,
    /// id 5
    Bf16,
}

impl Ct2Dtype {
    fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::Bf16,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::Bf16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }
}

#[derive(Debug, Clone)]
struct Variable {
    shape: Vec<usize>,
    dtype: Ct2Dtype,
    bytes: Range<usize>,
}

/// A parsed `model.bin`: the spec name and its variables (aliases resolved).
pub struct Ct2Model {
    /// Model spec, e.g. `WhisperSpec`.
    pub spec: String,
    data: Vec<u8>,
    variables: BTreeMap<String, Variable>,
}

struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Ct2Error> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return Err(Ct2Error::Truncated {
                what,
                at: self.at,
                need: n - (self.data.len() - self.at),
            });
        };
        let out = &self.data[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Ct2Error> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, Ct2Error> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, Ct2Error> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A length-prefixed, NUL-terminated string.
    fn string(&mut self, what: &'static str) -> Result<String, Ct2Error> {
        let at = self.at;
        let len = self.u16(what)? as usize;
        let bytes = self.take(len, what)?;
        let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
        String::from_utf8(bytes.to_vec()).map_err(|_| Ct2Error::Name(at))
    }
}

impl Ct2Model {
    /// Parses the bytes of a file.
    pub fn parse(data: Vec<u8>) -> Result<Self, Ct2Error> {
        let mut c = Cursor { data: &data, at: 0 };
        let version = c.u32("binary version")?;
        if version != 6 {
            return Err(Ct2Error::Version(version));
        }
        let spec = c.string("spec name")?;
        let _revision = c.u32("spec revision")?;
        let count = c.u32("variable count")?;
        let mut variables = BTreeMap::new();
        for _ in 0..count {
            let name = c.string("variable name")?;
            let rank = c.u8("rank")? as usize;
            let shape = (0..rank)
                .map(|_| c.u32("dimension").map(|d| d as usize))
                .collect::<Result<Vec<_>, _>>()?;
            let id = c.u8("dtype")?;
            let dtype = Ct2Dtype::from_id(id).ok_or_else(|| Ct2Error::Dtype {
                name: name.clone(),
                id,
            })?;
            let actual = c.u32("byte count")? as usize;
            let expected = shape
                .iter()
                .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
                .unwrap_or(usize::MAX);
            if expected != actual {
                return Err(Ct2Error::Size {
                    name,
                    shape,
                    dtype,
                    expected,
                    actual,
                });
            }
            let start = c.at;
            c.take(actual, "variable data")?;
            variables.insert(
                name,
                Variable {
                    shape,
                    dtype,
                    bytes: start..c.at,
                },
            );
        }
        let aliases = c.u32("alias count")?;
        for _ in 0..aliases {
            let alias = c.string("alias")?;
            let target = c.string("alias target")?;
            let variable = variables
                .get(&target)
                .cloned()
                .ok_or_else(|| Ct2Error::Missing(target.clone()))?;
            variables.insert(alias, variable);
        }
        if c.at != data.len() {
            return Err(Ct2Error::Trailing(data.len() - c.at));
        }
        Ok(Self {
            spec,
            data,
            variables,
        })
    }

    /// Names of every variable (aliases included).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.variables.keys().map(String::as_str)
    }

    /// A float variable as an f32 tensor of its shape.
    pub fn tensor(&self, name: &str) -> Result<Tensor, Ct2Error> {
        let v = self
            .variables
            .get(name)
            .ok_or_else(|| Ct2Error::Missing(name.into()))?;
        let dtype = match v.dtype {
            Ct2Dtype::F32 => DType::F32,
            Ct2Dtype::F16 => DType::F16,
            Ct2Dtype::Bf16 => DType::BF16,
            _ => return Err(Ct2Error::Missing(name.into())),
        };
        let bytes = &self.data[v.bytes.clone()];
        let t = Tensor::from_raw_buffer(bytes, dtype, &v.shape, &Device::Cpu)?;
        Ok(t.to_dtype(DType::F32)?)
    }

    /// An integer scalar (e.g. `encoder/num_heads`).
    pub fn scalar(&self, name: &str) -> Result<i64, Ct2Error> {
        let v = self
            .variables
            .get(name)
            .filter(|v| v.shape.is_empty())
            .ok_or_else(|| Ct2Error::Missing(name.into()))?;
        let b = &self.data[v.bytes.clone()];
        Ok(match v.dtype {
            Ct2Dtype::I8 => i64::from(b[0] as i8),
            Ct2Dtype::I16 => i64::from(i16::from_le_bytes([b[0], b[1]])),
            Ct2Dtype::I32 => i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            _ => return Err(Ct2Error::Missing(name.into())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-variable file in the format's layout.
    fn sample() -> Vec<u8> {
        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend((s.len() as u16 + 1).to_le_bytes());
            out.extend(s.as_bytes());
            out.push(0);
        }
        let mut out = Vec::new();
        out.extend(6u32.to_le_bytes());
        string(&mut out, "TestSpec");
        out.extend(1u32.to_le_bytes());
        out.extend(2u32.to_le_bytes());
        string(&mut out, "w");
        out.push(2);
        out.extend(2u32.to_le_bytes());
        out.extend(1u32.to_le_bytes());
        out.push(0);
        out.extend(8u32.to_le_bytes());
        out.extend(1.5f32.to_le_bytes());
        out.extend((-2.0f32).to_le_bytes());
        string(&mut out, "heads");
        out.push(0);
        out.push(2);
        out.extend(2u32.to_le_bytes());
        out.extend(8i16.to_le_bytes());
        out.extend(1u32.to_le_bytes());
        string(&mut out, "alias");
        string(&mut out, "w");
        out
    }

    #[test]
    fn reads_variables_scalars_and_aliases() {
        let m = Ct2Model::parse(sample()).unwrap();
        assert_eq!(m.spec, "TestSpec");
        let w = m.tensor("alias").unwrap();
        assert_eq!(w.dims(), &[2, 1]);
        assert_eq!(
            w.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![1.5, -2.0]
        );
        assert_eq!(m.scalar("heads").unwrap(), 8);
        assert!(matches!(m.tensor("nope"), Err(Ct2Error::Missing(_))));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let full = sample();
        for len in 0..full.len() {
            let err = Ct2Model::parse(full[..len].to_vec())
                .err()
                .unwrap_or_else(|| panic!("prefix of {len} bytes parsed"));
            assert_eq!(err.code(), Code::ModelBadWeights, "{err}");
        }
    }

    #[test]
    fn corrupt_headers_are_named() {
        let mut bad_version = sample();
        bad_version[0] = 5;
        assert!(matches!(
            Ct2Model::parse(bad_version),
            Err(Ct2Error::Version(5))
        ));
        // The byte count of `w` (after name, rank, 2 dims, dtype) says 9.
        let mut bad_size = sample();
        let at = 4 + 2 + 9 + 4 + 4 + 2 + 2 + 1 + 8 + 1;
        bad_size[at] = 9;
        assert!(matches!(
            Ct2Model::parse(bad_size),
            Err(Ct2Error::Size { .. })
        ));
        let mut bad_dtype = sample();
        bad_dtype[at - 1] = 9;
        assert!(matches!(
            Ct2Model::parse(bad_dtype),
            Err(Ct2Error::Dtype { id: 9, .. })
        ));
        let mut trailing = sample();
        trailing.push(0);
        assert!(matches!(
            Ct2Model::parse(trailing),
            Err(Ct2Error::Trailing(1))
        ));
    }
}
