//! Reading the one tensor in vLLM's `prompt_embeds`: base64 of the bytes `torch.save(tensor)`
//! writes, a stored (uncompressed) ZIP with `<archive>/data.pkl` (pickle protocol 2) and the raw
//! storage in `<archive>/data/<key>`. Only what `torch.save` emits for one dense tensor is
//! accepted: a restricted pickle machine that knows no globals but `_rebuild_tensor_v2`, the float
//! storage classes and `OrderedDict`, never calls anything, and bounds every count and offset.
//! Any other input is an error (`prompt_embeds` was vLLM's CVE-2025-62164).

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

/// Run the restricted pickle machine over `data.pkl`; returns the top object.
fn unpickle(p: &[u8]) -> Result<V, TorchError> {
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
    for _ in 0..10_000 {
        if stack.len() > 1000 || memo.len() > 1000 {
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
                stack.push(V::Global(m, n));
            }
            b'q' => {
                let k = take(&mut i, 1)?[0] as u32;
                memo.insert(k, stack.last().cloned().ok_or_else(|| TorchError("pickle stack empty".into()))?);
            }
            b'r' => {
                let k = u32::from_le_bytes(take(&mut i, 4)?.try_into().unwrap());
                memo.insert(k, stack.last().cloned().ok_or_else(|| TorchError("pickle stack empty".into()))?);
            }
            b'h' => {
                let k = take(&mut i, 1)?[0] as u32;
                stack.push(memo.get(&k).cloned().ok_or_else(|| TorchError("pickle memo miss".into()))?);
            }
            b'j' => {
                let k = u32::from_le_bytes(take(&mut i, 4)?.try_into().unwrap());
                stack.push(memo.get(&k).cloned().ok_or_else(|| TorchError("pickle memo miss".into()))?);
            }
            b'(' => stack.push(V::Mark),
            b')' => stack.push(V::Tuple(vec![])),
            b'}' => stack.push(V::Dict),
            b'N' => stack.push(V::None),
            0x88 => stack.push(V::Bool(true)),
            0x89 => stack.push(V::Bool(false)),
            b'K' => stack.push(V::Int(take(&mut i, 1)?[0] as i64)),
            b'M' => stack.push(V::Int(u16::from_le_bytes(take(&mut i, 2)?.try_into().unwrap()) as i64)),
            b'J' => stack.push(V::Int(i32::from_le_bytes(take(&mut i, 4)?.try_into().unwrap()) as i64)),
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
                stack.push(V::Int(v));
            }
            b'X' => {
                let n = u32::from_le_bytes(take(&mut i, 4)?.try_into().unwrap()) as usize;
                stack.push(V::Str(String::from_utf8_lossy(take(&mut i, n)?).to_string()));
            }
            0x8c => {
                let n = take(&mut i, 1)?[0] as usize;
                stack.push(V::Str(String::from_utf8_lossy(take(&mut i, n)?).to_string()));
            }
            b't' => {
                let m = stack.iter().rposition(|v| *v == V::Mark).ok_or_else(|| TorchError("pickle mark missing".into()))?;
                let items = stack.split_off(m + 1);
                stack.pop();
                stack.push(V::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return err("pickle stack underflow");
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(V::Tuple(items));
            }
            b'Q' => {
                let pid = stack.pop().ok_or_else(|| TorchError("pickle stack empty".into()))?;
                stack.push(V::Persistent(Box::new(pid)));
            }
            b'R' => {
                let args = stack.pop().ok_or_else(|| TorchError("pickle stack empty".into()))?;
                let f = stack.pop().ok_or_else(|| TorchError("pickle stack empty".into()))?;
                stack.push(V::Reduce(Box::new(f), Box::new(args)));
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
        let mut rng = crate::generate::Rng::new(5);
        for _ in 0..3000 {
            let mut b = raw.clone();
            for _ in 0..1 + rng.next_u64() % 4 {
                let at = (rng.next_u64() as usize) % b.len();
                b[at] = rng.next_u64() as u8;
            }
            let cut = if rng.next_u64() % 3 == 0 { (rng.next_u64() as usize) % b.len() } else { b.len() };
            let _ = load_tensor(&b[..cut]);
        }
        assert_eq!(load_tensor(b"PK\x05\x06").unwrap_err().to_string(), "prompt_embeds: not a zip archive (torch.save output expected)");
    }
}
