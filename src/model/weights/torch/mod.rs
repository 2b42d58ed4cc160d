//! Reading the one tensor in vLLM's `prompt_embeds`: base64 of the bytes `torch.save(tensor)`
//! writes, a stored (uncompressed) ZIP with `<archive>/data.pkl` (pickle protocol 2) and the raw
//! storage in `<archive>/data/<key>`. Only what `torch.save` emits for one dense tensor is
//! accepted: a restricted pickle machine that knows no globals but `_rebuild_tensor_v2`, the float
//! storage classes and `OrderedDict`, never calls anything, and bounds every count and offset.
//! Any other input is an error (`prompt_embeds` was vLLM's CVE-2025-62164). Work and memory are
//! bounded by the input's length and by a budget on the values the machine builds and on how
//! deeply they nest: memo references copy values, so a 200-byte pickle could otherwise double a
//! tuple forty times.
//!
//! [`save_tensor`] writes the same format for the gateway to vLLM, so that no client byte is
//! ever forwarded upstream.

mod pickle;
mod zip;

use pickle::{unpickle, V};
use zip::zip_entries;
pub use pickle::{MAX_DEPTH, MAX_OPS, MAX_VALUES};
pub use zip::write_zip;
use half::{bf16, f16};

/// Why a `prompt_embeds` payload was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("prompt_embeds: {0}")]
pub struct TorchError(pub String);

fn err<T>(m: impl Into<String>) -> Result<T, TorchError> {
    Err(TorchError(m.into()))
}

/// Decode `torch.save` bytes of one float tensor: (shape, row-major f32 values).
pub fn load_tensor(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>), TorchError> {
    let entries = zip_entries(bytes)?;
    let (pkl_name, pkl) = entries.iter().find(|(n, _)| n.ends_with("/data.pkl") || n == "data.pkl").ok_or_else(|| TorchError("no data.pkl in the archive".into()))?;
    let prefix = &pkl_name[..pkl_name.len() - "data.pkl".len()];
    if let Some((_, bo)) = entries.iter().find(|(n, _)| *n == format!("{prefix}byteorder")) {
        if *bo != b"little" {
            return err("only little-endian tensors are accepted");
        }
    }
    let top = unpickle(pkl)?;
    let V::Reduce(f, args) = top else { return err("the archive does not hold a tensor") };
    if *f != V::Global("torch._utils".into(), "_rebuild_tensor_v2".into()) {
        return err("the archive does not hold a tensor");
    }
    let V::Tuple(args) = *args else { return err("malformed tensor record") };
    let [V::Persistent(pid), V::Int(offset), V::Tuple(size), V::Tuple(stride), ..] = &args[..] else {
        return err("malformed tensor record");
    };
    let V::Tuple(pid) = pid.as_ref() else { return err("malformed storage record") };
    let [V::Str(kind), V::Global(_, storage), V::Str(key), _, V::Int(numel)] = &pid[..] else {
        return err("malformed storage record");
    };
    if kind != "storage" {
        return err("malformed storage record");
    }
    let ints = |t: &[V]| -> Result<Vec<usize>, TorchError> {
        t.iter().map(|v| match v { V::Int(x) if *x >= 0 && *x < 1 << 31 => Ok(*x as usize), _ => err("bad size or stride") }).collect()
    };
    let (size, stride) = (ints(size)?, ints(stride)?);
    if size.len() != stride.len() || size.is_empty() || size.len() > 4 {
        return err(format!("tensor rank {} is not accepted", size.len()));
    }
    // Any strided view, as torch.load accepts: the last element it reaches must lie inside the
    // storage. Elements are gathered in row-major order.
    let numel_out = size.iter().try_fold(1usize, |n, s| n.checked_mul(*s)).ok_or_else(|| TorchError("size overflows".into()))?;
    let reach = size.iter().zip(&stride).try_fold(0usize, |r, (s, st)| s.saturating_sub(1).checked_mul(*st).and_then(|x| r.checked_add(x)));
    let elem = match storage.as_str() {
        "FloatStorage" => 4,
        "HalfStorage" | "BFloat16Storage" => 2,
        "DoubleStorage" => 8,
        other => return err(format!("storage type {other} is not a float type")),
    };
    let (_, raw) = entries.iter().find(|(n, _)| *n == format!("{prefix}data/{key}")).ok_or_else(|| TorchError(format!("storage `{key}` missing from the archive")))?;
    if *numel < 0 || raw.len() != (*numel as usize).saturating_mul(elem) {
        return err(format!("storage holds {} bytes, {numel} elements of {elem} bytes expected", raw.len()));
    }
    let offset = usize::try_from(*offset).map_err(|_| TorchError("negative storage offset".into()))?;
    // Bounded by the bytes received: a view never holds more elements than its storage here
    // (zero strides could otherwise ask for any amount of memory).
    if numel_out > *numel as usize {
        return err(format!("the tensor has {numel_out} elements, more than its storage's {numel}"));
    }
    if numel_out > 0 && reach.and_then(|r| r.checked_add(offset)).is_none_or(|last| last >= *numel as usize) {
        return err("the tensor runs past its storage");
    }
    let read = |i: usize| -> f32 {
        let c = &raw[i * elem..(i + 1) * elem];
        match elem {
            4 => f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            8 => f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32,
            _ if storage == "HalfStorage" => f16::from_le_bytes([c[0], c[1]]).to_f32(),
            _ => bf16::from_le_bytes([c[0], c[1]]).to_f32(),
        }
    };
    let mut values = Vec::with_capacity(numel_out);
    let mut index = vec![0usize; size.len()];
    for _ in 0..numel_out {
        values.push(read(offset + index.iter().zip(&stride).map(|(i, st)| i * st).sum::<usize>()));
        // Advance the row-major multi-index.
        for d in (0..size.len()).rev() {
            index[d] += 1;
            if index[d] < size[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Ok((size, values))
}

/// The bytes `torch.save(tensor)` writes for a contiguous f32 tensor of `shape` (row-major
/// `values`): what vLLM's `prompt_embeds` expects, base64-encoded.
pub fn save_tensor(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    write_tensor(&mut out, shape, &[values]).expect("shape and values disagree");
    out
}

/// [`save_tensor`] streamed into `out`, for a tensor whose row-major values are `parts` one after
/// another (a soft prompt, then rows of an embedding table, each where it lies): nothing is
/// gathered or converted on the way.
pub fn write_tensor(out: &mut impl std::io::Write, shape: &[usize], parts: &[&[f32]]) -> std::io::Result<()> {
    let count: usize = parts.iter().map(|p| p.len()).sum();
    if shape.iter().product::<usize>() != count {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("shape {shape:?} and {count} values disagree")));
    }
    let int = |p: &mut Vec<u8>, v: usize| {
        p.push(b'J');
        p.extend_from_slice(&(v as i32).to_le_bytes());
    };
    let text = |p: &mut Vec<u8>, s: &str| {
        p.push(b'X');
        p.extend_from_slice(&(s.len() as u32).to_le_bytes());
        p.extend_from_slice(s.as_bytes());
    };
    let mut p = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((".to_vec();
    text(&mut p, "storage");
    p.extend_from_slice(b"ctorch\nFloatStorage\n");
    text(&mut p, "0");
    text(&mut p, "cpu");
    int(&mut p, count);
    p.extend_from_slice(b"tQ");
    int(&mut p, 0);
    let mut stride = vec![1usize; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        stride[d] = stride[d + 1] * shape[d + 1];
    }
    for dims in [shape, &stride[..]] {
        p.push(b'(');
        dims.iter().for_each(|&x| int(&mut p, x));
        p.push(b't');
    }
    p.extend_from_slice(b"\x89ccollections\nOrderedDict\n)RtR.");
    // torch's storage is little-endian (`byteorder`), as f32 is in memory on every target lopa builds for.
    let data: Vec<&[u8]> = parts.iter().map(|v| bytemuck::cast_slice::<f32, u8>(v)).collect();
    zip::write_zip_to(
        out,
        &[
            ("archive/data.pkl", &[&p]),
            ("archive/.format_version", &[b"1"]),
            ("archive/.storage_alignment", &[b"64"]),
            ("archive/byteorder", &[b"little"]),
            ("archive/data/0", &data),
            ("archive/version", &[b"3\n"]),
        ],
    )
}

#[cfg(target_endian = "big")]
compile_error!("torch.save archives are written from f32 values in memory order, which must be little-endian");

#[cfg(test)]
mod tests {
    use super::*;


    #[test]
    fn random_corruption_of_a_saved_tensor_never_panics() {
        let pe: serde_json::Value = serde_json::from_slice(&std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/prompt_embeds.json")).unwrap()).unwrap();
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD.decode(pe["f16"].as_str().unwrap()).unwrap();
        let (shape, values) = load_tensor(&raw).unwrap();
        assert_eq!(shape, vec![3, 64]);
        assert_eq!(values.len(), 192);
        let mut rng = crate::rng::Rng::new(5);
        for _ in 0..3000 {
            let mut b = raw.clone();
            for _ in 0..1 + rng.next_u64() % 4 {
                let at = (rng.next_u64() as usize) % b.len();
                b[at] = rng.next_u64() as u8;
            }
            let cut = if rng.next_u64().is_multiple_of(3) { (rng.next_u64() as usize) % b.len() } else { b.len() };
            let _ = load_tensor(&b[..cut]);
        }
        assert_eq!(load_tensor(b"PK\x05\x06").unwrap_err().to_string(), "prompt_embeds: not a zip archive (torch.save output expected)");
    }

    #[test]
    fn saved_tensors_read_back_exactly() {
        let values: Vec<f32> = (0..3 * 5).map(|i| i as f32 * 0.37 - 2.0).collect();
        let bytes = save_tensor(&[3, 5], &values);
        assert_eq!(load_tensor(&bytes).unwrap(), (vec![3, 5], values));
    }
}
