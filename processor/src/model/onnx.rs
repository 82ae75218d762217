//! Reads the float tensors out of an ONNX file: graph initializers and the
//! values of `Constant` nodes, in the main graph and in every subgraph (an
//! `If` node's branches hold whole networks). Only the protobuf wire
//! format is needed for that, so no ONNX runtime or code generator is: the
//! network itself is written out in candle.

use std::collections::HashMap;

use super::ModelError;

/// A named float tensor: its shape and values (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxTensor {
    /// Dimensions.
    pub dims: Vec<usize>,
    /// Values.
    pub values: Vec<f32>,
}

fn bad(what: &str) -> ModelError {
    ModelError::BadWeights(format!("onnx: {what}"))
}

/// One protobuf field: its number and value.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ModelError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self
                .buf
                .split_first()
                .ok_or_else(|| bad("truncated varint"))?;
            self.buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(bad("varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ModelError> {
        if n > self.buf.len() {
            return Err(bad("truncated field"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, ModelError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Fixed
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| bad("length"))?;
                Field::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed
            }
            other => return Err(bad(&format!("wire type {other}"))),
        };
        Ok(Some((key >> 3, field)))
    }
}

fn fields(buf: &[u8]) -> Reader<'_> {
    Reader { buf }
}

/// A `TensorProto`: its name and, when it is float32, its value.
fn tensor(buf: &[u8]) -> Result<(String, Option<OnnxTensor>), ModelError> {
    const FLOAT: u64 = 1;
    let (mut name, mut dims, mut data_type) = (String::new(), Vec::new(), 0);
    let (mut raw, mut floats): (Option<&[u8]>, Vec<f32>) = (None, Vec::new());
    let mut r = fields(buf);
    while let Some((number, field)) = r.next()? {
        match (number, field) {
            (1, Field::Varint(d)) => dims.push(d as usize),
            (1, Field::Bytes(packed)) => {
                let mut p = fields(packed);
                while !p.buf.is_empty() {
                    dims.push(p.varint()? as usize);
                }
            }
            (2, Field::Varint(t)) => data_type = t,
            (4, Field::Bytes(packed)) => floats.extend(
                packed
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))),
            ),
            (8, Field::Bytes(n)) => name = String::from_utf8_lossy(n).into_owned(),
            (9, Field::Bytes(bytes)) => raw = Some(bytes),
            _ => {}
        }
    }
    if data_type != FLOAT {
        return Ok((name, None));
    }
    let values = match raw {
        Some(bytes) => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect(),
        None => floats,
    };
    let count = dims.iter().try_fold(1usize, |n, d| n.checked_mul(*d));
    if count != Some(values.len()) {
        return Err(bad(&format!(
            "tensor {name:?} has {} values for {dims:?}",
            values.len()
        )));
    }
    Ok((name, Some(OnnxTensor { dims, values })))
}

/// Subgraphs nested deeper than this are refused (a crafted file could
/// otherwise exhaust the stack).
const MAX_DEPTH: usize = 16;

/// Collects the float tensors of a `GraphProto` and its subgraphs.
fn graph(
    buf: &[u8],
    depth: usize,
    out: &mut HashMap<String, OnnxTensor>,
) -> Result<(), ModelError> {
    if depth > MAX_DEPTH {
        return Err(bad("subgraphs nested too deep"));
    }
    let mut r = fields(buf);
    while let Some((number, field)) = r.next()? {
        match (number, field) {
            (1, Field::Bytes(node)) => self::node(node, depth, out)?,
            (5, Field::Bytes(init)) => {
                if let (name, Some(t)) = tensor(init)? {
                    out.insert(name, t);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A `NodeProto`: a `Constant`'s value is named by its output; graph
/// attributes are walked.
fn node(buf: &[u8], depth: usize, out: &mut HashMap<String, OnnxTensor>) -> Result<(), ModelError> {
    let (mut outputs, mut op) = (Vec::new(), String::new());
    let mut values = Vec::new();
    let mut r = fields(buf);
    while let Some((number, field)) = r.next()? {
        match (number, field) {
            (2, Field::Bytes(o)) => outputs.push(String::from_utf8_lossy(o).into_owned()),
            (4, Field::Bytes(o)) => op = String::from_utf8_lossy(o).into_owned(),
            (5, Field::Bytes(attribute)) => {
                let mut a = fields(attribute);
                while let Some((number, field)) = a.next()? {
                    match (number, field) {
                        (5, Field::Bytes(t)) => values.push(tensor(t)?.1),
                        (6, Field::Bytes(g)) => graph(g, depth + 1, out)?,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if op == "Constant"
        && let (Some(name), Some(Some(value))) = (outputs.first(), values.pop())
    {
        out.insert(name.clone(), value);
    }
    Ok(())
}

/// Every float tensor of an ONNX model (`ModelProto` bytes), by name.
pub fn float_tensors(model: &[u8]) -> Result<HashMap<String, OnnxTensor>, ModelError> {
    let mut out = HashMap::new();
    let mut r = fields(model);
    let mut seen_graph = false;
    while let Some((number, field)) = r.next()? {
        if let (7, Field::Bytes(g)) = (number, field) {
            graph(g, 0, &mut out)?;
            seen_graph = true;
        }
    }
    if !seen_graph {
        return Err(bad("no graph"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes_field(number: u64, body: &[u8], out: &mut Vec<u8>) {
        varint(number << 3 | 2, out);
        varint(body.len() as u64, out);
        out.extend_from_slice(body);
    }

    /// A model whose graph has one `Constant` node inside an `If` branch.
    #[test]
    fn finds_constants_in_subgraphs() {
        let mut t = Vec::new();
        varint(1 << 3, &mut t); // dims: 2
        varint(2, &mut t);
        varint(2 << 3, &mut t); // data_type float
        varint(1, &mut t);
        let raw: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        bytes_field(9, &raw, &mut t);
        let mut attr = Vec::new();
        bytes_field(5, &t, &mut attr);
        let mut constant = Vec::new();
        bytes_field(2, b"w", &mut constant);
        bytes_field(4, b"Constant", &mut constant);
        bytes_field(5, &attr, &mut constant);
        let mut branch = Vec::new();
        bytes_field(1, &constant, &mut branch);
        let mut if_attr = Vec::new();
        bytes_field(6, &branch, &mut if_attr);
        let mut if_node = Vec::new();
        bytes_field(4, b"If", &mut if_node);
        bytes_field(5, &if_attr, &mut if_node);
        let mut main = Vec::new();
        bytes_field(1, &if_node, &mut main);
        let mut model = Vec::new();
        varint(1 << 3, &mut model); // ir_version
        varint(8, &mut model);
        bytes_field(7, &main, &mut model);
        let found = float_tensors(&model).unwrap();
        assert_eq!(
            found["w"],
            OnnxTensor {
                dims: vec![2],
                values: vec![1.5, -2.0]
            }
        );
        assert!(float_tensors(&model[..model.len() - 3]).is_err());
    }

    fn model_of(graph: &[u8]) -> Vec<u8> {
        let mut model = Vec::new();
        bytes_field(7, graph, &mut model);
        model
    }

    fn bad_weights(model: &[u8]) -> String {
        match float_tensors(model) {
            Err(ModelError::BadWeights(why)) => why,
            other => panic!("expected bad weights, got {other:?}"),
        }
    }

    /// Dimensions whose product overflows are refused, not wrapped to a
    /// size the (empty) data matches.
    #[test]
    fn refuses_overflowing_dimensions() {
        let mut t = Vec::new();
        for d in [1u64 << 63, 2] {
            varint(1 << 3, &mut t);
            varint(d, &mut t);
        }
        varint(2 << 3, &mut t); // float
        varint(1, &mut t);
        bytes_field(8, b"w", &mut t);
        let mut graph = Vec::new();
        bytes_field(5, &t, &mut graph); // an initializer
        assert!(bad_weights(&model_of(&graph)).contains("values for"));
    }

    /// Subgraphs nested past the limit are refused before the stack runs out.
    #[test]
    fn refuses_deeply_nested_subgraphs() {
        let mut graph = Vec::new();
        for _ in 0..=MAX_DEPTH + 1 {
            let mut attr = Vec::new();
            bytes_field(6, &graph, &mut attr);
            let mut node = Vec::new();
            bytes_field(4, b"If", &mut node);
            bytes_field(5, &attr, &mut node);
            graph.clear();
            bytes_field(1, &node, &mut graph);
        }
        assert!(bad_weights(&model_of(&graph)).contains("nested"));
    }
}
