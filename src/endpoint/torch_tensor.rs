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

use super::wire::{check_finite, check_shape, TensorRule};
use crate::model::SoftPrompt;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use half::{bf16, f16};

/// Why a `prompt_embeds` payload was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("prompt_embeds: {0}")]
pub struct TorchError(pub String);

fn err<T>(m: impl Into<String>) -> Result<T, TorchError> {
    Err(TorchError(m.into()))
}

fn u16le(b: &[u8], at: usize) -> Result<usize, TorchError> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]]) as usize).ok_or_else(|| TorchError("zip truncated".into()))
}
fn u32le(b: &[u8], at: usize) -> Result<usize, TorchError> {
    b.get(at..at + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize).ok_or_else(|| TorchError("zip truncated".into()))
}

/// The stored entries of a ZIP file: (name, data). Compressed or ZIP64 entries are refused.
fn zip_entries(b: &[u8]) -> Result<Vec<(String, &[u8])>, TorchError> {
    // End of central directory: the last 22..22+65535 bytes.
    let lo = b.len().saturating_sub(22 + 65535);
    let eocd = (lo..b.len().saturating_sub(21)).rev().find(|&i| b[i..].starts_with(&[0x50, 0x4b, 0x05, 0x06])).ok_or_else(|| TorchError("not a zip archive (torch.save output expected)".into()))?;
    let count = u16le(b, eocd + 10)?;
    let mut at = u32le(b, eocd + 16)?;
    if count > 64 {
        return err(format!("zip has {count} entries; one tensor needs at most a few"));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        if u32le(b, at)? != 0x0201_4b50 {
            return err("zip central directory is corrupt");
        }
        let method = u16le(b, at + 10)?;
        let csize = u32le(b, at + 20)?;
        let usize_ = u32le(b, at + 24)?;
        let (nlen, elen, clen) = (u16le(b, at + 28)?, u16le(b, at + 30)?, u16le(b, at + 32)?);
        let local = u32le(b, at + 42)?;
        let name = b.get(at + 46..at + 46 + nlen).ok_or_else(|| TorchError("zip truncated".into()))?;
        let name = String::from_utf8_lossy(name).to_string();
        if method != 0 || csize != usize_ {
            return err(format!("zip entry `{name}` is compressed; torch.save stores entries uncompressed"));
        }
        if csize == 0xFFFF_FFFF || local == 0xFFFF_FFFF {
            return err("zip64 archives are not accepted");
        }
        if u32le(b, local)? != 0x0403_4b50 {
            return err(format!("zip local header of `{name}` is corrupt"));
        }
        let start = local + 30 + u16le(b, local + 26)? + u16le(b, local + 28)?;
        let data = b.get(start..start.checked_add(csize).ok_or_else(|| TorchError("zip sizes overflow".into()))?).ok_or_else(|| TorchError(format!("zip entry `{name}` runs past the end")))?;
        out.push((name, data));
        at += 46 + nlen + elen + clen;
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
enum V {
    Int(i64),
    Str(String),
    Bool(bool),
    None,
    Tuple(Vec<V>),
    Global(String, String),
    Persistent(Box<V>),
    Reduce(Box<V>, Box<V>),
    Dict,
    Mark,
}

/// Most values (tuple items counted one by one) the machine may build for one payload. A saved
/// tensor needs about 20.
pub const MAX_VALUES: usize = 512;
/// Deepest nesting of tuples and calls. A saved tensor needs 4.
pub const MAX_DEPTH: usize = 8;
/// Most opcodes executed for one payload. A saved tensor needs about 40.
pub const MAX_OPS: usize = 2_000;

/// Values built and the nesting depth of one value: (values, depth). Recursion is bounded
/// because no value deeper than [`MAX_DEPTH`] is ever built.
fn measure(v: &V) -> (usize, usize) {
    match v {
        V::Tuple(items) => items.iter().map(measure).fold((1, 1), |(n, d), (n2, d2)| (n + n2, d.max(d2 + 1))),
        V::Persistent(a) => {
            let (n, d) = measure(a);
            (n + 1, d + 1)
        }
        V::Reduce(f, a) => {
            let ((n1, d1), (n2, d2)) = (measure(f), measure(a));
            (n1 + n2 + 1, d1.max(d2) + 1)
        }
        _ => (1, 1),
    }
}

/// Charge the budget for a new value: one value for a fresh node (its items were charged when
/// they were built), all of them for a copy out of or into the memo.
fn charge(built: &mut usize, v: V, copy: bool) -> Result<V, TorchError> {
    let (n, depth) = measure(&v);
    *built += if copy { n } else { 1 };
    if depth > MAX_DEPTH {
        return err(format!("pickle nests values {depth} deep; a saved tensor needs at most {MAX_DEPTH}"));
    }
    if *built > MAX_VALUES {
        return err(format!("pickle builds more than {MAX_VALUES} values; a saved tensor needs a few dozen"));
    }
    Ok(v)
}

/// Run the restricted pickle machine over `data.pkl`; returns the top object.
fn unpickle(p: &[u8]) -> Result<V, TorchError> {
    let mut built = 0usize;
    let mut stack: Vec<V> = Vec::new();
    let mut memo: std::collections::HashMap<u32, V> = Default::default();
    let mut i = 0usize;
    let take = |i: &mut usize, n: usize| -> Result<&[u8], TorchError> {
        let s = p.get(*i..*i + n).ok_or_else(|| TorchError("pickle truncated".into()))?;
        *i += n;
        Ok(s)
    };
    let line = |i: &mut usize| -> Result<String, TorchError> {
        let end = p[*i..].iter().position(|&c| c == b'\n').ok_or_else(|| TorchError("pickle truncated".into()))?;
        let s = String::from_utf8_lossy(&p[*i..*i + end]).to_string();
        *i += end + 1;
        Ok(s)
    };
    for _ in 0..MAX_OPS {
        if stack.len() > MAX_VALUES || memo.len() > MAX_VALUES {
            return err("pickle is too large for one tensor");
        }
        let op = *p.get(i).ok_or_else(|| TorchError("pickle truncated".into()))?;
        i += 1;
        match op {
            0x80 => {
                take(&mut i, 1)?;
            }
            b'c' => {
                let (m, n) = (line(&mut i)?, line(&mut i)?);
                let allowed = matches!((m.as_str(), n.as_str()),
                    ("torch._utils", "_rebuild_tensor_v2") | ("collections", "OrderedDict")
                    | ("torch", "FloatStorage" | "HalfStorage" | "BFloat16Storage" | "DoubleStorage"));
                if !allowed {
                    return err(format!("pickle refers to `{m}.{n}`, which a saved tensor does not need"));
                }
                stack.push(charge(&mut built, V::Global(m, n), false)?);
            }
            b'q' => {
                let k = take(&mut i, 1)?[0] as u32;
                let top = stack.last().cloned().ok_or_else(|| TorchError("pickle stack empty".into()))?;
                memo.insert(k, charge(&mut built, top, true)?);
            }
            b'r' => {
                let k = u32::from_le_bytes(take(&mut i, 4)?.try_into().unwrap());
                let top = stack.last().cloned().ok_or_else(|| TorchError("pickle stack empty".into()))?;
                memo.insert(k, charge(&mut built, top, true)?);
            }
            b'h' => {
                let k = take(&mut i, 1)?[0] as u32;
                let v = memo.get(&k).cloned().ok_or_else(|| TorchError("pickle memo miss".into()))?;
                stack.push(charge(&mut built, v, true)?);
            }
            b'j' => {
                let k = u32::from_le_bytes(take(&mut i, 4)?.try_into().unwrap());
                let v = memo.get(&k).cloned().ok_or_else(|| TorchError("pickle memo miss".into()))?;
                stack.push(charge(&mut built, v, true)?);
            }
            b'(' => stack.push(charge(&mut built, V::Mark, false)?),
            b')' => stack.push(charge(&mut built, V::Tuple(vec![]), false)?),
            b'}' => stack.push(charge(&mut built, V::Dict, false)?),
            b'N' => stack.push(charge(&mut built, V::None, false)?),
            0x88 => stack.push(charge(&mut built, V::Bool(true), false)?),
            0x89 => stack.push(charge(&mut built, V::Bool(false), false)?),
            b'K' => stack.push(charge(&mut built, V::Int(take(&mut i, 1)?[0] as i64), false)?),
            b'M' => stack.push(charge(&mut built, V::Int(u16::from_le_bytes(take(&mut i, 2)?.try_into().unwrap()) as i64), false)?),
            b'J' => stack.push(charge(&mut built, V::Int(i32::from_le_bytes(take(&mut i, 4)?.try_into().unwrap()) as i64), false)?),
            0x8a => {
                let n = take(&mut i, 1)?[0] as usize;
                let bytes = take(&mut i, n)?;
                if n > 8 {
                    return err("pickle integer too large");
                }
                let mut v: i64 = 0;
                for (k, &byte) in bytes.iter().enumerate() {
                    v |= (byte as i64) << (8 * k);
                }
                if n > 0 && n < 8 && bytes[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(charge(&mut built, V::Int(v), false)?);
            }
            b'X' => {
                let n = u32::from_le_bytes(take(&mut i, 4)?.try_into().unwrap()) as usize;
                stack.push(charge(&mut built, V::Str(String::from_utf8_lossy(take(&mut i, n)?).to_string()), false)?);
            }
            0x8c => {
                let n = take(&mut i, 1)?[0] as usize;
                stack.push(charge(&mut built, V::Str(String::from_utf8_lossy(take(&mut i, n)?).to_string()), false)?);
            }
            b't' => {
                let m = stack.iter().rposition(|v| *v == V::Mark).ok_or_else(|| TorchError("pickle mark missing".into()))?;
                let items = stack.split_off(m + 1);
                stack.pop();
                stack.push(charge(&mut built, V::Tuple(items), false)?);
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return err("pickle stack underflow");
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(charge(&mut built, V::Tuple(items), false)?);
            }
            b'Q' => {
                let pid = stack.pop().ok_or_else(|| TorchError("pickle stack empty".into()))?;
                stack.push(charge(&mut built, V::Persistent(Box::new(pid)), false)?);
            }
            b'R' => {
                let args = stack.pop().ok_or_else(|| TorchError("pickle stack empty".into()))?;
                let f = stack.pop().ok_or_else(|| TorchError("pickle stack empty".into()))?;
                stack.push(charge(&mut built, V::Reduce(Box::new(f), Box::new(args)), false)?);
            }
            b'u' => {
                // SETITEMS on an OrderedDict of backward hooks: a saved soft prompt has none.
                let m = stack.iter().rposition(|v| *v == V::Mark).ok_or_else(|| TorchError("pickle mark missing".into()))?;
                if stack.len() != m + 1 {
                    return err("tensor carries backward hooks");
                }
                stack.pop();
            }
            b'.' => return stack.pop().ok_or_else(|| TorchError("pickle is empty".into())),
            other => return err(format!("pickle opcode 0x{other:02x} is not used by torch.save for a tensor")),
        }
    }
    err("pickle is too long")
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

/// CRC-32 (IEEE), as ZIP readers check it.
fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    !bytes.iter().fold(!0u32, |c, &b| TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8))
}

/// A stored ZIP with each entry's data aligned to 64 bytes (torch pads with an extra field, too).
pub fn write_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = out.len();
        let header = 30 + name.len();
        // The extra field is 4 bytes of id and length plus padding up to the next 64-byte boundary.
        let pad = (64 - (offset + header + 4) % 64) % 64;
        let crc = crc32(data);
        let mut fixed = Vec::with_capacity(26);
        fixed.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // version, flags, method 0, time, date
        fixed.extend_from_slice(&crc.to_le_bytes());
        fixed.extend_from_slice(&(data.len() as u32).to_le_bytes());
        fixed.extend_from_slice(&(data.len() as u32).to_le_bytes());
        fixed.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&fixed);
        out.extend_from_slice(&((pad + 4) as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"FB");
        out.extend_from_slice(&(pad as u16).to_le_bytes());
        out.resize(out.len() + pad, b'Z');
        out.extend_from_slice(data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&[20, 0]); // made by
        central.extend_from_slice(&fixed);
        central.extend_from_slice(&[0; 12]); // extra, comment, disk, internal and external attributes
        central.extend_from_slice(&(offset as u32).to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let (cd_at, cd_len) = (out.len(), central.len());
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(cd_len as u32).to_le_bytes());
    out.extend_from_slice(&(cd_at as u32).to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// The bytes `torch.save(tensor)` writes for a contiguous f32 tensor of `shape` (row-major
/// `values`): what vLLM's `prompt_embeds` expects, base64-encoded.
pub fn save_tensor(shape: &[usize], values: &[f32]) -> Vec<u8> {
    assert_eq!(shape.iter().product::<usize>(), values.len(), "shape and values disagree");
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
    int(&mut p, values.len());
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
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_zip(&[
        ("archive/data.pkl", &p),
        ("archive/.format_version", b"1"),
        ("archive/.storage_alignment", b"64"),
        ("archive/byteorder", b"little"),
        ("archive/data/0", &data),
        ("archive/version", b"3\n"),
    ])
}

/// Decode vLLM's `prompt_embeds` and apply the same rules as to `soft_prompt`.
pub fn decode_prompt_embeds(b64: &str, width: usize, max_rows: usize) -> Result<SoftPrompt, TensorRule> {
    // A [max_rows, width] f64 tensor plus a few KiB of archive is the most a valid payload needs.
    let limit = (max_rows * width * 8 + 64 * 1024).div_ceil(3) * 4;
    if b64.len() > limit {
        return Err(TensorRule::TooLong { encoded: b64.len(), m: max_rows, d: width });
    }
    let bytes = STANDARD.decode(b64.as_bytes()).map_err(|e| TensorRule::Base64(e.to_string()))?;
    let (shape, values) = load_tensor(&bytes).map_err(|e| TensorRule::Torch(e.0))?;
    let shape: Vec<u64> = shape.iter().map(|&x| x as u64).collect();
    let (m, d) = check_shape(&shape, width, max_rows)?;
    check_finite(values, m, d)
}

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
        // Entries are stored, 64-byte aligned, with the CRC a ZIP reader checks.
        let entries = zip_entries(&bytes).unwrap();
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["archive/data.pkl", "archive/.format_version", "archive/.storage_alignment", "archive/byteorder", "archive/data/0", "archive/version"]);
        for (_, data) in &entries {
            assert_eq!((data.as_ptr() as usize - bytes.as_ptr() as usize) % 64, 0);
        }
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    /// A pickle that memoizes a tuple and doubles it `n` times (`h0 h0 t2 q0` repeated).
    fn doubling(n: usize) -> Vec<u8> {
        let mut p = b"\x80\x02)q\x00".to_vec();
        for _ in 0..n {
            p.extend_from_slice(b"h\x00h\x00\x86q\x00");
        }
        p.push(b'.');
        p
    }

    #[test]
    fn pickles_that_multiply_or_nest_values_are_refused() {
        // 40 doublings would build 2^40 values; the budget stops it after a few.
        let e = unpickle(&doubling(40)).unwrap_err().to_string();
        assert!(e.contains("more than 512 values"), "{e}");
        assert!(unpickle(&doubling(3)).is_ok());
        // 20,000 nested one-tuples.
        let mut deep = b"\x80\x02)".to_vec();
        deep.extend(std::iter::repeat_n(0x85u8, 20_000));
        deep.push(b'.');
        let e = unpickle(&deep).unwrap_err().to_string();
        assert!(e.contains("nests values 9 deep"), "{e}");
        // 20,000 open marks: the op budget ends it.
        let mut marks = b"\x80\x02".to_vec();
        marks.extend(std::iter::repeat_n(b'(', 20_000));
        assert!(unpickle(&marks).is_err());
    }
}
